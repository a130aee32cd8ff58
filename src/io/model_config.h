// config.json of a Hugging Face causal LM (model_type llama, mistral, mixtral, qwen2, qwen3,
// gemma2, gemma3_text).
// Known fields are parsed and validated; the whole JSON is kept so unknown keys survive a rewrite.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lamina {

enum class Arch { Llama, Mistral, Mixtral, Qwen2, Qwen3, Gemma2, Gemma3 };
// The MLP's gate activation: SwiGLU (silu) or GeGLU with torch's tanh approximation (Gemma).
enum class Activation { SiLU, GeluTanh };
const char* arch_name(Arch a);  // the model_type string

// RoPE frequency scaling (config.json's rope_scaling, or transformers v5's rope_parameters):
// "linear" divides every frequency by factor; "llama3" (Llama 3.1+) divides the low frequencies
// by factor, keeps the high ones and blends between; "yarn" (Qwen2.5 / Qwen3 long context) blends
// interpolated and extrapolated frequencies over a ramp of dimensions and scales q and k by
// attention_factor (model/rope_frequencies.h).
struct RopeScaling {
  std::string type;  // "" (plain RoPE), "linear", "llama3", "yarn", or "freq_factors" (a GGUF's)
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  double beta_fast = 32, beta_slow = 1, attention_factor = 1.0;  // yarn
  bool truncate = true;                                          // yarn
  // "freq_factors": each frequency divided by its factor [head_dim / 2] (llama.cpp's rope_freqs
  // tensor, how GGUF files carry llama3's scaling).
  std::vector<float> freq_factors;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0;
  int64_t vocab_size = 0, max_position_embeddings = 0;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::optional<int64_t> sliding_window;  // Mistral; null or absent means full attention
  // Attention biases: on q, k, v (Qwen2 always; attention_bias of llama and qwen3) and on o
  // (attention_bias of llama and qwen3). [out] F32 vectors added after the projection.
  bool qkv_bias = false, o_bias = false;
  // Qwen3: an RMSNorm over each head's query and key (q_norm / k_norm [head_dim]) before RoPE.
  bool qk_norm = false;
  // Gemma 3 (gemma3_text): GeGLU; RMSNorm gains applied as (1 + w); norms on the attention's and
  // the MLP's outputs too ("sandwich": post_attention_layernorm, pre/post_feedforward_layernorm);
  // embeddings scaled by sqrt(hidden_size); queries scaled by query_pre_attn_scalar^-1/2; the
  // sliding window only on the layers layer_types marks, whose RoPE has its own base.
  Activation hidden_act = Activation::SiLU;
  bool norm_plus_one = false, sandwich_norms = false;
  double embed_scale = 1.0;
  double attn_scale = 0;  // 0: 1 / sqrt(head_dim)
  // Gemma 2: scores and final logits soft-capped, cap * tanh(x / cap) (0: none).
  double attn_softcap = 0, final_softcap = 0;
  std::vector<uint8_t> sliding_layers;  // per layer: 1 = sliding attention; empty: all (Mistral)
  double rope_local_theta = 0;          // the sliding layers' plain RoPE base (0: as the others)
  // The attention window of a layer (0: full attention).
  int64_t window_of(int64_t layer) const {
    if (!sliding_window) return 0;
    return sliding_layers.empty() || sliding_layers[size_t(layer)] ? *sliding_window : 0;
  }
  // Whether a layer's RoPE is the local one (rope_local_theta, no scaling).
  bool local_rope(int64_t layer) const {
    return rope_local_theta > 0 && !sliding_layers.empty() && sliding_layers[size_t(layer)];
  }
  bool tie_word_embeddings = false;
  int64_t num_local_experts = 0, num_experts_per_tok = 0;  // Mixtral
  double router_aux_loss_coef = 0.0;
  int64_t bos_token_id = 1;
  // nn.Embedding's padding_idx: that row's embedding gets no gradient from the lookup (the tied
  // LM head's part still flows). Gemma's configs default it to 0; absent or null: none.
  std::optional<int64_t> pad_token_id;
  std::vector<int64_t> eos_token_ids{2};
  DType torch_dtype = DType::F32;
  nlohmann::json raw;  // everything as read, for writing back unchanged

  bool is_moe() const { return arch == Arch::Mixtral; }
  // Reads and validates; `where` names the file in errors.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where);
  static ModelConfig load(const std::string& model_dir);
  // raw with the parsed fields written over it (so edits to fields take effect).
  nlohmann::json to_json() const;
  void save(const std::string& path) const;

  // Parameter counts from shapes alone (no weights needed).
  int64_t param_count() const;
  int64_t active_param_count() const;  // per token: only top-k experts count
};

}  // namespace lamina
