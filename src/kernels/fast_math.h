// Vectorisable float math shared by the kernels.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace lamina {

// exp(x) for float, vectorisable (libm's expf is a scalar call): x = n*ln2 + r, |r| <= ln2/2,
// e^r by its degree-6 Taylor polynomial (relative error < 2e-7), times 2^n built in the exponent.
#pragma omp declare simd notinbranch
inline float fast_exp(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

}  // namespace lamina
