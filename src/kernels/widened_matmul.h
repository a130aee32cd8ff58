// Products in F32 arithmetic with a weight kept in a narrower storage type (BF16, F16, or ggml
// blocks: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). The weight's rows are widened to F32 a slab at a time
// (~4 MB, so a slab stays in cache for its product) and multiplied by the F32 gemm: no F32 copy of
// the matrix ever exists, and the result is the exact F32 product with the dequantized weight.
// Training over a frozen base that is never materialised in F32 (--base-dtype) uses both
// directions: the forward product and the input gradient of the backward.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lamina {

// y[M, N] (+)= x[M, K] · widen(w)^T, w a [N, K] tensor as a Hugging Face Linear stores it.
void linear_widened(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate);
// dx[M, K] (+)= dy[M, N] · widen(w): the gradient of y = x w^T with respect to x.
void linear_widened_dx(const float* dy, int64_t M, const Tensor& w, float* dx, bool accumulate);

}  // namespace lamina
