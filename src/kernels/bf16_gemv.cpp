#include "kernels/bf16_gemv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#if defined(__x86_64__)
#include "kernels/avx2_util.h"
#endif

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/cpu_features.h"

namespace lamina {

namespace {

constexpr int kMaxRows = 4;

#if defined(__x86_64__)

// 8 bf16 values -> their F32 values (the upper half of each 32-bit lane).
LAMINA_AVX2 inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Weight rows [n0, n1) against RX rows of xr (already rounded, F32), two accumulators per pair
// to hide the FMA latency; K's tail (K % 16) in scalar code.
template <int RX>
LAMINA_AVX2 void rows_avx2(const float* xr, const uint16_t* w, int64_t n0, int64_t n1, int64_t N,
                           int64_t K, float* y, bool acc) {
  const int64_t K16 = K / 16 * 16;
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* row = w + n * K;
    __m256 a0[RX], a1[RX];
    for (int c = 0; c < RX; ++c) a0[c] = _mm256_setzero_ps(), a1[c] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) {
      const __m256 w0 = widen8(row + k), w1 = widen8(row + k + 8);
      for (int c = 0; c < RX; ++c) {
        a0[c] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + c * K + k), a0[c]);
        a1[c] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + c * K + k + 8), a1[c]);
      }
    }
    for (int c = 0; c < RX; ++c) {
      float v = hsum_avx2(_mm256_add_ps(a0[c], a1[c]));
      for (int64_t k = K16; k < K; ++k) v += bf16_to_f32(row[k]) * xr[c * K + k];
      float& o = y[c * N + n];
      o = acc ? o + v : v;
    }
  }
}
#endif

}  // namespace

bool bf16_gemv_runnable() {
#if defined(__x86_64__)
  return cpu_features().avx2 && cpu_features().fma && cpu_features().f16c;
#else
  return false;
#endif
}

void bf16_gemv(const float* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, float* y,
               bool accumulate) {
  LAMINA_CHECK(M >= 0 && M <= kMaxRows && bf16_gemv_runnable(), "bf16_gemv: ", M, " rows on a CPU ",
               bf16_gemv_runnable() ? "with" : "without", " AVX2");
#if defined(__x86_64__)
  thread_local std::vector<float> xr_buf;
  xr_buf.resize(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) xr_buf[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
  const float* xr = xr_buf.data();  // this thread's buffer, read by all
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t n0 = N * t / nt, n1 = N * (t + 1) / nt;
    switch (M) {
      case 4:
        rows_avx2<4>(xr, w, n0, n1, N, K, y, accumulate);
        break;
      case 3:
        rows_avx2<3>(xr, w, n0, n1, N, K, y, accumulate);
        break;
      case 2:
        rows_avx2<2>(xr, w, n0, n1, N, K, y, accumulate);
        break;
      case 1:
        rows_avx2<1>(xr, w, n0, n1, N, K, y, accumulate);
        break;
      default:
        break;
    }
  }
#else
  (void)x, (void)w, (void)N, (void)K, (void)y, (void)accumulate;
#endif
}

}  // namespace lamina
