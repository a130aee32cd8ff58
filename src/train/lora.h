// LoRA adapters (Hu et al.; PEFT's format): W' = W + (alpha / r) · B · A on chosen projections,
// A [r, in] kaiming-uniform, B [out, r] zero (so training starts at the base model). Saved as
// PEFT does: adapter_config.json + adapter_model.safetensors with PEFT's tensor names, so
// Hugging Face PEFT loads them; merge_lora folds an adapter into full weights.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
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
  double scale() const { return rslora ? alpha / std::sqrt(double(r)) : alpha / double(r); }
};

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
