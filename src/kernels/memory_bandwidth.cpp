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
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < n; i += 16) {  // 64-byte lines, four independent sums
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = i; j < std::min(n, i + 16); ++j) s += p[j];
      total += s;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += total;
    best = std::max(best, double(bytes) / dt);
  }
  if (sink < 0) std::abort();  // keeps the sums alive; never true (every element is >= 0)
  return best;
}

}  // namespace lamina
