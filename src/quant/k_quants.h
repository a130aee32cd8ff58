// ggml's k-quants: super-blocks of 256 values in sub-blocks of 16 or 32 with quantized scales,
// as llama.cpp's Q2_K ... Q6_K files hold them, and the scale searches ggml's quantizers share.
//
// The quantizers reproduce ggml's byte for byte (ggml-quants.c of llama.cpp as vendored by
// llama-cpp-python 0.3.36; tests/oracles/test_llamacpp.py compares them with ggml's own
// ggml_quantize_chunk): without an importance matrix, ggml's quantize_row_*_ref (what
// llama-quantize writes without --imatrix); with one, quantize_row_*_impl, whose per-column
// weights (the imatrix entry of the row's tensor) steer every scale search. Every floating-point
// operation is kept in ggml's order and F32; this file is compiled without FMA contraction, as
// ggml's base library is (no -march flags there).
//
// Layouts (little-endian, packed; f16 scales; x = decoded value):
//   Q2_K  84 B: scales[16] (4-bit scale | 4-bit min << 4), qs[64] (2 bits), f16 d, f16 dmin
//               x = d·sc·q - dmin·m per sub-block of 16
//   Q3_K 110 B: hmask[32] (third bit), qs[64] (low 2 bits), scales[12] (16 6-bit signed), f16 d
//               x = d·(sc - 32)·(q - 4) per sub-block of 16
//   Q4_K 144 B: f16 d, f16 dmin, scales[12] (8 6-bit scales + 8 6-bit mins), qs[128]
//               x = d·sc·q - dmin·m per sub-block of 32
//   Q5_K 176 B: as Q4_K with qh[32] (fifth bit) before qs
//   Q6_K 210 B: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
//               x = d·sc·(q - 32) per sub-block of 16
#pragma once
#include <cstdint>

#include "quant/ggml_blocks.h"

namespace lamina {

constexpr int64_t kSuperBlock = 256;  // ggml's QK_K

bool is_k_quant(GgmlType t);
// One row of n values (n % 256 == 0) -> n / 256 blocks of type t; `importance` (n values, or
// null) is that row's importance matrix.
void quantize_k_row(GgmlType t, const float* x, int64_t n, uint8_t* out, const float* importance);
void dequantize_k_row(GgmlType t, const uint8_t* in, int64_t n, float* y);

// The scale searches, shared with the 32-value blocks' importance-weighted quantizers
// (ggml_blocks.cpp). ggml's make_qx_quants: a symmetric scale for n values on levels
// -nmax..nmax-1, L[i] the level + nmax; weights qw (or, when null, by rmse_type).
float ggml_make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type,
                          const float* qw);
// ggml's make_qkx3_quants: an asymmetric fit (scale, min <= 0; -min returned in *the_min) on
// levels 0..nmax, trying nstep + 1 stretched grids and keeping the one of least weighted error
// (absolute with use_mad). With weights given it is also ggml's make_qkx2_quants (the _ref
// quantizers' search): the two differ only where weights are null.
float ggml_make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                            float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                            bool use_mad);
// What ggml's importance-weighted quantizers share: the sum of squares of n values, and a
// group's weights qw[i] * sqrt(sigma2 + x[i]^2) into w (returning their sum, in order).
float ggml_sum_squares(const float* x, int64_t n);
float ggml_importance_weights(const float* x, const float* qw, float sigma2, int n, float* w);
// f16 scales as the blocks store them (little-endian, unaligned).
void ggml_put_f16(uint8_t* p, float v);
float ggml_get_f16(const uint8_t* p);
// ggml's nearest_int: round half to even through the 1.5·2^23 trick (|x| < 2^22).
int ggml_nearest_int(float x);

}  // namespace lamina
