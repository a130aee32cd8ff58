// What the run-time-dispatched AVX2 kernels share: the target attribute that lets a function use
// AVX2 / FMA / F16C in a binary built for any x86-64 (callers check cpu_features first), and
// small helpers.
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define LAMINA_AVX2 __attribute__((target("avx2,fma,f16c")))
// For a lambda inside a LAMINA_AVX2 function (lambdas do not inherit the target), inlined into it.
#define LAMINA_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline))

namespace lamina {

// The sum of the 8 lanes.
LAMINA_AVX2 inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The largest of the 8 lanes.
LAMINA_AVX2 inline float hmax_avx2(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// The sum of the 8 int32 lanes.
LAMINA_AVX2 inline int32_t hsum_epi32_avx2(__m256i v) {
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  t = _mm_hadd_epi32(t, t);
  t = _mm_hadd_epi32(t, t);
  return _mm_cvtsi128_si32(t);
}

// Pins v to a register at this point of the program. GCC reassociates a chain of integer vector
// adds (acc += p0; acc += p1; ...) into one sum after all the products, which keeps every product
// live at once and spills most of them: a chain written with this between its links stays a
// chain, with one product live at a time.
template <class V>
LAMINA_AVX2 inline void pin(V& v) {
  asm("" : "+x"(v));
}

}  // namespace lamina
#endif
