// LoRA adapters (Hu et al.; PEFT's format): W' = W + (alpha / r) · B · A on chosen projections,
// A [r, in] kaiming-uniform, B [out, r] zero (so training starts at the base model). Saved as
// PEFT does: adapter_config.json + adapter_model.safetensors with PEFT's tensor names, so
// Hugging Face PEFT loads them; merge_lora folds an adapter into full weights.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "train/params.h"

namespace lamina {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0;  // on the adapter's input during training (PEFT's lora_dropout)
  std::vector<std::string> targets{"q_proj", "v_proj"};  // PEFT module names
  uint64_t seed = 0;
  bool rslora = false;  // PEFT's use_rslora: scale alpha / sqrt(r) (Kalajdzievski), else alpha / r
  // PEFT's rank_pattern / alpha_pattern: (key, value) in the order given, overriding r and alpha
  // for the modules a key matches (see pattern_key); the first key that matches wins.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  double scale() const { return scale_for(r, alpha); }
  double scale_for(int64_t rank, double a) const {
    return rslora ? a / std::sqrt(double(rank)) : a / double(rank);
  }
  // A module's rank, alpha and scale; module: PEFT's module name in the model,
  // "model.layers.3.self_attn.q_proj" or "model.layers.0.block_sparse_moe.experts.2.w1".
  int64_t rank_of(const std::string& module) const;
  double alpha_of(const std::string& module) const;
  double scale_of(const std::string& module) const {
    return scale_for(rank_of(module), alpha_of(module));
  }
};

// PEFT 0.21.2's get_pattern_key: the first key for which re.match(r"(.*\.)?(KEY)$", module)
// matches, i.e. the module name is KEY or ends in "." + KEY, KEY read as a regular expression
// (so "q_proj" is every q_proj, "model.layers.0.self_attn.q_proj" one, "layers\.[0-3]\..*" a
// range). Returns the index of that key, or -1.
int pattern_key(const std::vector<std::string>& keys, const std::string& module);
// Every key must be a regular expression and every value positive: the first bad one is an error
// naming `where` (the option or file) and the key.
void check_lora_patterns(const LoraConfig& c, const std::string& where);
// "KEY=VALUE" (split at the last '=') as given to --lora-rank-pattern / --lora-alpha-pattern.
std::pair<std::string, double> parse_lora_pattern(const std::string& spec,
                                                  const std::string& option);

// "q,v" or "q_proj,v_proj", Mixtral's "w1,w2,w3", or "all" -> PEFT module names ("all" stays
// as it is until add_lora resolves it for the model); unknown names are an error.
std::vector<std::string> parse_lora_targets(const std::string& list);
// The module names a model gets: "all" is every attention and MLP projection (on Mixtral q, k,
// v, o and the experts' w1, w2, w3; the router stays frozen). A dense MLP name on Mixtral or an
// expert name on a dense model is an error naming the right ones.
std::vector<std::string> resolve_lora_targets(const ModelConfig& cfg,
                                              const std::vector<std::string>& targets);
// PEFT's name for a layer's adapter tensor:
// base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
std::string peft_lora_name(int64_t layer, int target, bool is_b);
// ...layers.{i}.block_sparse_moe.experts.{e}.w1.lora_A.weight
std::string peft_expert_lora_name(int64_t layer, int64_t expert, int target, bool is_b);
// The module those adapt, as PEFT's patterns see it: model.layers.{i}.self_attn.q_proj,
// model.layers.{i}.block_sparse_moe.experts.{e}.w1.
std::string lora_module_path(int64_t layer, int target);
std::string expert_lora_module_path(int64_t layer, int64_t expert, int target);

// Adds the adapters to a store (p.lora_targets: the resolved module names), freezes every base
// tensor, sets lora_scale.
void add_lora(ParamStore& p, const LoraConfig& c);
// Writes adapter_config.json + adapter_model.safetensors (F32) for the adapters in p.
void save_lora_adapter(const ParamStore& p, const LoraConfig& c, const std::string& dir,
                       const std::string& base_model);
LoraConfig read_lora_config(const std::string& adapter_dir);
// base + adapter -> a full HF model directory (weights in `dtype`, default the base's).
void merge_lora(const std::string& base_dir, const std::string& adapter_dir, const std::string& out,
                bool force, std::optional<DType> dtype);

}  // namespace lamina
