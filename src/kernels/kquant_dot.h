// Integer dot products of ggml's k-quant weight blocks (Q4_K, Q5_K, Q6_K: 256 elements each, in
// sub-blocks of 32 / 16 with 6- or 8-bit scales) with activations quantized per block of 256 to
// ggml's Q8_K — llama.cpp's semantics for these types (its CPU backend's vec_dot_type for them):
//   Q4_K / Q5_K: y = sum_b [ d_w d_x sum_s sc_s sum_{j in s} q_j x_j - dmin_w d_x sum_s m_s bsum_s
//   ] Q6_K:        y = sum_b   d_w d_x sum_s sc_s sum_{j in s} (q_j - 32) x_j
// every sum inside a block exact in int32, the blocks accumulated in F32 (sub-block sums of the
// activations, bsum, kept with them). Variants as for Q4_0 (kernels/quant_dot.h): a scalar
// reference and AVX2 (vpmaddubsw on the unsigned quants, vpmaddwd with the scales), chosen at run
// time; tests run every runnable one against the reference and against ggml's own vec_dot.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kernels/quant_dot.h"

namespace lamina {

// Activations as ggml's quantize_row_q8_K_ref: per block of 256, the element of largest |x| sets
// d = max / -127 (the sign kept: that element quantizes to -127), q = nearest(x · -127 / max),
// at most 127; d stays F32. bsum: each 16 elements' sum of q.
struct Q8KActivations {
  int64_t M = 0, K = 0;
  std::vector<int8_t> q;      // [M, K]
  std::vector<float> d;       // [M, K / 256]
  std::vector<int16_t> bsum;  // [M, K / 16]
};
// x [M, K], K a multiple of 256; rows in parallel. Every kernel gives the same bytes.
void quantize_activations_q8_k(const float* x, int64_t M, int64_t K, Q8KActivations& out,
                               QuantKernel kernel = default_quant_kernel());

// Whether kquant_dot_rows takes this weight type.
bool is_integer_kquant(DType t);

// y[m, n] (+)= the product above for rows m in [m0, m1) of x and n in [n0, n1) of w, Q4_K, Q5_K,
// Q6_K, Q4_Kx8 or Q6_Kx8 (kernels/q4_k_x8.h, kernels/q6_k_x8.h; n0, n1 multiples of 8) rows of
// rb bytes each at w; y has row stride ldy.
void kquant_dot_rows(QuantKernel k, DType wtype, const Q8KActivations& x, int64_t m0, int64_t m1,
                     const uint8_t* w, size_t rb, int64_t n0, int64_t n1, float* y, int64_t ldy,
                     bool accumulate);

// Whether an inference Model repacks Q6_K into Q6_Kx8: where the default kernel has its tile
// (VNNI); the AVX2 row kernel reads Q6_K as stored faster than anything on Q6_Kx8 there.
bool q6_k_repacked();

}  // namespace lamina
