// Which ggml type each tensor of a GGUF file gets, for every file type lamina writes: the
// convert_hf_to_gguf.py types (f32, f16, bf16, q8_0: every matrix the one type) and llama.cpp's
// quantization mixes as llama-quantize makes them from such a file (llama_tensor_get_type in
// llama-quant.cpp of llama-cpp-python 0.3.36's llama.cpp): Q4_K_M keeps most matrices Q4_K but
// gives half of the attn_v and ffn_down layers, and the output matrix, Q6_K, and so on. q4_0 is
// llama-quantize's `--pure` Q4_0 (the output matrix Q4_0 too, which lamina's integer kernels run).
#pragma once
#include <cstdint>
#include <string>

#include "quant/ggml_blocks.h"

namespace lamina {

struct QuantMix {
  const char* name;  // as `export-gguf --outtype` and llama-quantize spell it, lower case
  uint32_t ftype;    // llama_ftype: general.file_type
  GgmlType base;     // the type of the matrices no rule singles out
  bool llama_rules;  // llama-quantize's per-tensor rules and fallbacks (else convert's)
};

// f32 f16 bf16 q8_0 q4_0 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k
// (case-insensitive); Error listing them for any other.
const QuantMix& parse_quant_mix(const std::string& name);
std::string quant_mix_names();

// What llama.cpp's rules look at besides the tensor.
struct MixModel {
  int64_t n_layer = 0;
  int64_t n_gqa = 1;     // attention heads per KV head
  int64_t n_expert = 0;  // 0 or 1: dense
  bool is_70b = false;   // llama.cpp's LLM_TYPE_70B (80-layer Llama with GQA, 80-layer Qwen2)
  bool tied = false;     // no output.weight: token_embd is the output matrix
};

// The type of matrix `gguf_name` (token_embd.weight, blk.N.attn_v.weight, output.weight, ...,
// rows of `ncols` values) in a file of this mix. Vectors, norms and Mixtral's router are not
// matrices here: they stay F32 in every mix. Returns F16 where no block type fits a row (convert's
// rule), and for the llama.cpp mixes their fallbacks (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
// Q2_K / Q3_K -> Q4_0, then F16) when ncols is not a multiple of 256.
GgmlType mix_tensor_type(const QuantMix& mix, const MixModel& model, const std::string& gguf_name,
                         int64_t ncols);

}  // namespace lamina
