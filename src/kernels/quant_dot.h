// Integer dot products of ggml's Q8_0 / Q4_0 weight blocks with activations quantized per block
// of 32 to 8 bits as ggml's Q8_0 (llama.cpp's semantics for these types: its CPU backend
// quantizes the activations the same way before every product with Q8_0 / Q4_0 weights):
//   y[m, n] = sum_b dw[n, b] · dx[m, b] · sum_j qw[n, b, j] · qx[m, b, j]
// with the int8 sums exact in int32. Variants: a scalar reference, AVX2 (vpmaddubsw), and for the
// repacked x8 layouts vpdpbusd in its two encodings (AVX-VNNI, AVX512-VNNI: kernels/
// int8_tiles_vnni.h; the other layouts run the AVX2 code there); the best one this CPU runs is
// chosen at run time (cpu_features), and tests run every runnable one against the reference. AVX2
// has two shapes: 2 weight rows x 4 activation rows (Q8_0 as stored, and rows left over) and 8
// weight rows interleaved into the lanes (the x8 layouts, and Q4_0 as stored: packed per group for
// 8 or more activation rows, transposed in registers else).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace lamina {

// Activations as Q8_0 (ggml's quantize_row_q8_0_ref: d = max|x| / 127 rounded to f16,
// q = roundf(x · (1 / d)) with the unrounded d; so |q| <= 127, never -128, which the kernels'
// int16 pair sums rely on), split into values and scales. llama.cpp's own AVX2 quantizer
// multiplies by 127 / max|x| and rounds ties to even: it can differ from this by one in q.
struct Q8Activations {
  int64_t M = 0, K = 0;
  std::vector<int8_t> q;   // [M, K]
  std::vector<float> d;    // [M, K / 32], the f16 scale as F32
  std::vector<int32_t> s;  // [M, K / 32], each block's sum of q
};
// In order of preference: the last one this CPU runs is the default.
enum class QuantKernel { kScalar, kAvx2, kAvxVnni, kAvx512Vnni };
const char* quant_kernel_name(QuantKernel k);  // scalar, avx2, avxvnni, avx512vnni
// The variants this CPU can run, the scalar one first.
std::vector<QuantKernel> runnable_quant_kernels();
// The fastest runnable variant, or the one LAMINA_QUANT_KERNEL names (for benchmarks and
// checks; naming one this CPU cannot run is an error).
QuantKernel default_quant_kernel();

// x [M, K], K a multiple of 32; rows in parallel. Every kernel gives the same bytes (the x86 ones
// the AVX2 code).
void quantize_activations_q8_0(const float* x, int64_t M, int64_t K, Q8Activations& out,
                               QuantKernel kernel = default_quant_kernel());

// y[m, n] (+)= the product above for rows m in [m0, m1) of x and n in [n0, n1) of w, a Q8_0,
// Q4_0, Q4_0x8 or Q8_0x8 weight whose rows are rb bytes each (K / 32 blocks) at w; y has row
// stride ldy. The x8 layouts (repack_x8) take whole groups of 8 rows: n0, n1 multiples of 8.
void quant_dot_rows(QuantKernel k, DType wtype, const Q8Activations& x, int64_t m0, int64_t m1,
                    const uint8_t* w, size_t rb, int64_t n0, int64_t n1, float* y, int64_t ldy,
                    bool accumulate);

// Q4_0 / Q8_0 rows [N, K] (N a multiple of 8) -> Q4_0x8 / Q8_0x8 (core/dtype.h): each group of 8
// rows' blocks with their quant bytes interleaved by 4-byte chunks (lane r of a 32-byte chunk is
// row r) and the 8 f16 scales after them, so that the products read one contiguous stream of whole
// groups and the 8 row sums land in the 8 lanes.
void repack_x8(DType from, const uint8_t* rows, int64_t N, int64_t K, uint8_t* out);

}  // namespace lamina
