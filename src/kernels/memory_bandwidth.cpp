#include "kernels/memory_bandwidth.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace lamina {

double measure_read_bandwidth(int64_t bytes, int rounds) {
  const int64_t n = bytes / int64_t(sizeof(float));
  std::unique_ptr<float, decltype(&std::free)> buf(
      static_cast<float*>(std::aligned_alloc(64, size_t(n) * sizeof(float))), &std::free);
  float* p = buf.get();
  // Touch every page from the threads that will read it (first-touch placement).
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = float(i & 7);
  double best = 0, sink = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    double total = 0;
    // Each thread streams one contiguous slice (the way decode's threads stream their rows).
#pragma omp parallel reduction(+ : total)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // independent sums: the adds do not serialise
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t i = lo; i < hi - 3; i += 4) {
        s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
      }
      total += double(s0) + s1 + s2 + s3;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += total;
    best = std::max(best, double(bytes) / dt);
  }
  if (sink < 0) std::abort();  // keeps the sums alive; never true (every element is >= 0)
  return best;
}

}  // namespace lamina
