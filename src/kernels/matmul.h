// Matrix products. Every one goes through oneDNN (AMX/AVX-512 kernels); this header is the seam
// where other backends (CUDA, quantized 4-bit blocks) plug in later.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lamina {

// y[M, N] = x[M, K] · w[N, K]^T, w stored as a Hugging Face Linear weight (row-major [out, in]),
// F32 or BF16. With a BF16 weight, x is rounded to BF16 and the product accumulates in F32 (AMX).
// With accumulate, y += instead of y =.
void linear(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate = false);

// Number of threads the kernels use (OpenMP); 0 leaves the default.
void set_num_threads(int n);
int num_threads();

}  // namespace lamina
