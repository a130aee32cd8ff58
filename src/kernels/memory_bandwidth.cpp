#include "kernels/memory_bandwidth.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/avx2_util.h"
#include "kernels/cpu_features.h"

namespace lamina {

namespace {

// The sum of p[lo, hi) (hi - lo a multiple of 4). The plain loop (SSE2 in a generic x86-64
// build) is bound by its adds at about half of what a 2-thread Xeon streams; 32-byte loads into 4
// independent sums are not.
float slice_sum(const float* p, int64_t lo, int64_t hi) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // independent sums: the adds do not serialise
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = lo; i < hi - 3; i += 4) {
    s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
  }
  return s0 + s1 + s2 + s3;
}

#if defined(__x86_64__)
LAMINA_AVX2 float slice_sum_avx2(const float* p, int64_t lo, int64_t hi) {
  __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
  int64_t i = lo;
  for (; i + 32 <= hi; i += 32) {
    a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
    b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
    c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
    d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
  }
  const float rest = slice_sum(p, i, hi);
  return hsum_avx2(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))) + rest;
}
#endif

}  // namespace

double measure_read_bandwidth(int64_t bytes, int rounds) {
  const int64_t n = bytes / int64_t(sizeof(float));
  std::unique_ptr<float, decltype(&std::free)> buf(
      static_cast<float*>(std::aligned_alloc(64, size_t(n) * sizeof(float))), &std::free);
  float* p = buf.get();
  // Touch every page from the threads that will read it (first-touch placement).
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = float(i & 7);
  double best = 0, sink = 0;
#if defined(__x86_64__)
  const bool avx2 = cpu_features().avx2;
#endif
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    double total = 0;
    // Each thread streams one contiguous slice (the way decode's threads stream their rows).
#pragma omp parallel reduction(+ : total)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t lo = n * t / nt / 4 * 4, hi = t + 1 == nt ? n : n * (t + 1) / nt / 4 * 4;
#if defined(__x86_64__)
      total += avx2 ? slice_sum_avx2(p, lo, hi) : slice_sum(p, lo, hi);
#else
      total += slice_sum(p, lo, hi);
#endif
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += total;
    best = std::max(best, double(bytes) / dt);
  }
  if (sink < 0) std::abort();  // keeps the sums alive; never true (every element is >= 0)
  return best;
}

}  // namespace lamina
