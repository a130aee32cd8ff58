// Products with weights stored as ggml blocks (src/quant/ggml_blocks.h), behind `linear`.
// Q8_0 / Q4_0 (and Q4_0x8 / Q8_0x8, as an inference Model repacks them): llama.cpp's semantics —
// the activations are quantized per block of 32 to Q8_0 and multiplied with the weight blocks in
// integer arithmetic (kernels/quant_dot.h), the kernel chosen at run time for this CPU. The threads
// take disjoint ranges of weight rows, each streaming its rows once per 64 activation rows.
// Q4_K / Q5_K / Q6_K (the K_M mixes; Q4_Kx8 as a Model repacks Q4_K): the same with activations
// quantized per 256 to Q8_K (kernels/kquant_dot.h), as llama.cpp computes them — always for
// decoding (<= 4 rows); prompts too unless kquant_prompts_in_bf16(). Q2_K, Q3_K, Q5_0, Q5_1 (read
// from GGUF files), and the k-quant prompts on AMX: rows expanded and rounded to bf16, products
// with bf16 semantics (activations rounded to bf16 too, F32 accumulation; on AMX 3x the AVX2
// integer kernel's prompt speed; with AVX512-BF16 but no AMX, 0.4x the VNNI integer kernel's).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lamina {

// y[M, N] (+)= x[M, K] · w[N, K]^T in the semantics above (K a multiple of 32, 256 for k-quants).
void linear_quantized(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate);

// Whether Q4_K / Q5_K / Q6_K products of more than 4 rows expand the blocks to bf16: where oneDNN
// has native bf16 kernels (kernels/matmul.h) on AMX tiles, unless LAMINA_KQUANT_PROMPT=int8|bf16
// says.
bool kquant_prompts_in_bf16();

}  // namespace lamina
