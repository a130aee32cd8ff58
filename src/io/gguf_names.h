// llama.cpp's GGUF tensor names for transformers' (archs "llama": Llama, Mistral, Mixtral;
// "qwen2"; "qwen3"), the one table that export (gguf_export) and import (model/gguf_model) share.
#pragma once
#include <string>

#include "io/model_config.h"

namespace lamina {

// llama.cpp's architecture for a config, the prefix of its metadata keys ("llama.block_count").
inline const char* gguf_arch(Arch a) {
  return a == Arch::Qwen2 ? "qwen2" : a == Arch::Qwen3 ? "qwen3" : "llama";
}
// llama.cpp's "llama" rotates adjacent pairs, so convert_hf_to_gguf permutes the Q and K rows (and
// biases); qwen2 / qwen3 use NEOX RoPE, which rotates i with i + hd/2 as transformers does.
inline bool gguf_permutes_rope(Arch a) {
  return a != Arch::Qwen2 && a != Arch::Qwen3;
}

struct GgufName {
  const char* gguf;  // blk.N.<gguf> for per-layer tensors
  const char* hf;    // model.layers.N.<hf>
  // Q and K rows are permuted for ggml's RoPE (adjacent pairs rotate together, where transformers
  // rotates dimension i with i + head_dim/2): 1 = with the query heads, 2 = the key/value heads.
  int rope_heads = 0;
};

// Every layer's attention and norms.
inline constexpr GgufName kGgufLayerTensors[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight", 1},
    {"attn_k.weight", "self_attn.k_proj.weight", 2},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};
// Where the config has them: attention biases (Qwen2's q/k/v, attention_bias) and Qwen3's
// per-head norms.
inline constexpr GgufName kGgufAttentionExtras[] = {
    {"attn_q.bias", "self_attn.q_proj.bias", 1},
    {"attn_k.bias", "self_attn.k_proj.bias", 2},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
};
// A dense layer's MLP.
inline constexpr GgufName kGgufDenseMlp[] = {
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};
// Mixtral: the router, and the experts stacked [E, rows, cols] from per-expert w1 / w3 / w2.
inline constexpr const char* kGgufRouter = "ffn_gate_inp.weight";
inline constexpr GgufName kGgufExperts[] = {
    {"ffn_gate_exps.weight", "w1.weight"},
    {"ffn_up_exps.weight", "w3.weight"},
    {"ffn_down_exps.weight", "w2.weight"},
};
// Outside the layers.
inline constexpr GgufName kGgufModelTensors[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},  // absent when the embedding is tied
};

}  // namespace lamina
