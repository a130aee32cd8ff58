#include "kernels/widened_matmul.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/matmul.h"
#include "quant/nf4.h"

namespace lamina {
namespace {

// Rows per slab: ~2^20 F32 values (4 MB), at least 16 rows, at most the whole matrix.
int64_t slab_rows(int64_t N, int64_t K) {
  return std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(K, 1), 16,
                             std::max<int64_t>(N, 1));
}

// Rows [n0, n0 + rows) of w widened to F32 into slab [rows, K].
void widen_rows(const Tensor& w, int64_t n0, int64_t rows, float* slab) {
  const int64_t K = w.shape[1];
  if (w.dtype == DType::NF4) {  // statistics over the whole tensor: dequantized by element range
    const auto* t = static_cast<const uint8_t*>(w.data);
    const int64_t per = std::max<int64_t>(1, 65536 / K);  // rows per task
#pragma omp parallel for schedule(static) if (rows * K > 65536)
    for (int64_t r = 0; r < rows; r += per)
      dequantize_nf4(t, w.numel(), (n0 + r) * K, std::min(per, rows - r) * K, slab + r * K);
    return;
  }
  const size_t row_bytes = dtype_bytes(w.dtype, K);
  const auto* base = static_cast<const uint8_t*>(w.data);
#pragma omp parallel for if (rows * K > 65536)
  for (int64_t r = 0; r < rows; ++r)
    convert_to_f32(base + size_t(n0 + r) * row_bytes, w.dtype, slab + r * K, size_t(K));
}

void check_weight(const Tensor& w) {
  LAMINA_CHECK(w.shape.size() == 2, "linear_widened: weight must be 2-D, got ", shape_str(w.shape));
  LAMINA_CHECK(w.shape[1] % dtype_block(w.dtype) == 0, "linear_widened: rows of ", w.shape[1],
               " elements are not whole ", dtype_name(w.dtype), " blocks");
}

// Calls f(n0, nc, slab) for each slab of rows [n0, n0 + nc) of w widened to F32 (slab [nc, K]).
template <class F>
void for_each_slab(const Tensor& w, F&& f) {
  const int64_t N = w.shape[0], K = w.shape[1];
  const int64_t rows = slab_rows(N, K);
  thread_local std::vector<float> slab;
  slab.resize(size_t(rows * K));
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t nc = std::min(rows, N - n0);
    widen_rows(w, n0, nc, slab.data());
    f(n0, nc, slab.data());
  }
}

}  // namespace

void linear_widened(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  check_weight(w);
  if (M == 0) return;
  const int64_t N = w.shape[0], K = w.shape[1];
  for_each_slab(w, [&](int64_t n0, int64_t nc, const float* slab) {
    // y[:, n0:n0+nc] (+)= x · slab^T
    gemm(false, true, M, nc, K, x, K, slab, K, y + n0, N, accumulate);
  });
}

void linear_widened_dx(const float* dy, int64_t M, const Tensor& w, float* dx, bool accumulate) {
  check_weight(w);
  if (M == 0) return;
  const int64_t N = w.shape[0], K = w.shape[1];
  for_each_slab(w, [&](int64_t n0, int64_t nc, const float* slab) {
    // dx (+)= dy[:, n0:n0+nc] · slab; every slab after the first adds to the previous ones.
    gemm(false, false, M, K, nc, dy + n0, N, slab, K, dx, K, accumulate || n0 > 0);
  });
}

}  // namespace lamina
