// Products with weights stored as ggml blocks (Q8_0, Q4_0; src/quant/ggml_blocks.h), behind
// `linear`, with bf16 semantics: each block's weights d·q are rounded to bf16, the activations too,
// and products accumulate in F32 — the same numbers as `--dtype bf16` over the dequantized weights.
// Decoding (≤ 4 rows): each weight row is read once and expanded in registers (AVX-512 where
// available). Prompts: a slab of rows at a time is expanded to bf16 and multiplied by oneDNN.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lamina {

// y[M, N] (+)= bf16(x)[M, K] · bf16(dequant(w))[N, K]^T, w a [N, K] Q8_0 or Q4_0 tensor (K a
// multiple of 32).
void linear_quantized(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate);

}  // namespace lamina
