// Decoding products with bf16 weights on CPUs without native bf16 products (no AVX512_BF16, so
// oneDNN has no bf16 kernel): each weight row is read once from where it is stored (the mapped
// checkpoint) and widened in registers, so the product streams 2 bytes per weight with no F32
// copy of any slab. Semantics of every bf16 product in lamina: x rounded to bf16, F32 products
// and accumulation.
#pragma once
#include <cstdint>

namespace lamina {

// Whether this CPU runs the AVX2 variant (cpu_features: avx2, fma, f16c).
bool bf16_gemv_runnable();
// y[M, N] (+)= bf16(x)[M, K] · w[N, K]^T for a few rows (M <= 4); the threads take disjoint
// ranges of weight rows. Requires bf16_gemv_runnable().
void bf16_gemv(const float* x, int64_t M, const uint16_t* w, int64_t N, int64_t K, float* y,
               bool accumulate);

}  // namespace lamina
