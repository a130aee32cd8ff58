// What the run-time-dispatched AVX2 kernels share: the target attribute that lets a function use
// AVX2 / FMA / F16C in a binary built for any x86-64 (callers check cpu_features first), and
// small helpers.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#define LAMINA_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace lamina {

// The sum of the 8 lanes.
LAMINA_AVX2 inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace lamina
#endif
