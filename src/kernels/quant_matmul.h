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
// A group of products with the same input (linear_quantized_group) shares one quantization of it
// and one parallel pass: the threads take pieces of the first matrix's rows, then the next's,
// without waiting for each other at the end of each matrix (decoding reads ~7 matrices a layer,
// each for a few hundred microseconds: a join and a ramp per matrix cost ~10% of it).
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"
#include "kernels/matmul.h"

namespace lamina {

// y[M, N] (+)= x[M, K] · w[N, K]^T in the semantics above (K a multiple of 32, 256 for k-quants).
void linear_quantized(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate);

// linear_quantized(x, M, *t.w, t.y, false) for every target (block-type weights of the same K):
// together where their products quantize x the same way (Q8_0 for Q8_0 / Q4_0 and their x8
// layouts, Q8_K for the integer k-quant products), else one after the other. Equal results.
void linear_quantized_group(const float* x, int64_t M, std::span<const LinearTarget> targets);

// Whether Q4_K / Q5_K / Q6_K products of more than 4 rows expand the blocks to bf16: where oneDNN
// has native bf16 kernels (kernels/matmul.h) on AMX tiles, unless LAMINA_KQUANT_PROMPT=int8|bf16
// says.
bool kquant_prompts_in_bf16();

}  // namespace lamina
