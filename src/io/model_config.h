// config.json of a Hugging Face causal LM (model_type llama, mistral, mixtral, qwen2, qwen3).
// Known fields are parsed and validated; the whole JSON is kept so unknown keys survive a rewrite.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lamina {

enum class Arch { Llama, Mistral, Mixtral, Qwen2, Qwen3 };
const char* arch_name(Arch a);  // the model_type string

// RoPE frequency scaling (config.json's rope_scaling, or transformers v5's rope_parameters):
// "linear" divides every frequency by factor; "llama3" (Llama 3.1+) divides the low frequencies
// by factor, keeps the high ones and blends between (model/rope_frequencies.h).
struct RopeScaling {
  std::string type;  // "" (plain RoPE), "linear", "llama3", or "freq_factors" (from a GGUF)
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
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
  bool tie_word_embeddings = false;
  int64_t num_local_experts = 0, num_experts_per_tok = 0;  // Mixtral
  double router_aux_loss_coef = 0.0;
  int64_t bos_token_id = 1;
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
