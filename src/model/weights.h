// The tensors of a model and the one list of them (names, shapes, where they bind) that drives
// loading, random initialisation and writing, and later the optimizer.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"
#include "io/safetensors.h"

namespace lamina {

// Mixtral checkpoints come in two layouts: per-expert Linear weights
// (block_sparse_moe.experts.{e}.w1/w2/w3 + block_sparse_moe.gate) and transformers v5's fused
// 3-D tensors (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I] + mlp.gate).
enum class MoeLayout { Split, Fused };

// Projections LoRA can adapt, in PEFT's target-module names (q_proj, ..., down_proj).
enum LoraTarget { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown, kLoraTargets };
const char* lora_module_name(int target);
// Mixtral's expert projections, in PEFT's module names: w1 (gate), w2 (down), w3 (up).
enum ExpertLoraTarget { kLoraW1, kLoraW2, kLoraW3, kExpertLoraTargets };
const char* expert_lora_module_name(int target);
struct LoraPair {
  Tensor a, b;      // A [r, in], B [out, r]; undefined when the projection is not adapted
  float scale = 0;  // alpha / r of this module (PEFT's rank_pattern / alpha_pattern may vary them)
};

struct LayerWeights {
  Tensor attn_norm, mlp_norm;                // [H], always F32 (Gemma: pre_feedforward_layernorm)
  Tensor post_attn_norm, post_mlp_norm;      // Gemma's norms on the attention / MLP outputs [H]
  Tensor wq, wk, wv, wo;                     // [nh*hd, H], [nkv*hd, H], [nkv*hd, H], [H, nh*hd]
  Tensor bq, bk, bv, bo;                     // attention biases (config.qkv_bias / o_bias), F32
  Tensor q_norm, k_norm;                     // Qwen3's per-head RMSNorm gains [hd], F32
  Tensor w_gate, w_up, w_down;               // dense MLP: [I, H], [I, H], [H, I]
  Tensor router;                             // MoE: [E, H]
  std::vector<Tensor> e_gate, e_up, e_down;  // MoE, per expert: [I, H], [I, H], [H, I]
  LoraPair lora[kLoraTargets];               // training with LoRA adapters only
  std::vector<LoraPair> e_lora[kExpertLoraTargets];  // MoE, [w1, w2, w3][expert]; empty: none
};

struct ModelWeights {
  Tensor embed;  // [V, H]
  std::vector<LayerWeights> layers;
  Tensor norm;     // [H], F32
  Tensor lm_head;  // [V, H]; the embedding itself when tie_word_embeddings
};

struct TensorSpec {
  std::string name;
  Shape shape;
  bool is_norm = false;  // RMSNorm gains: initialised to 1, kept in F32
  // Stores a loaded tensor (of `shape`) into the weights.
  std::function<void(ModelWeights&, const Tensor&)> bind;
  // Mixtral's router: kept F32 when the other matrices are rounded (bf16) or quantized, since a
  // rounding of its logits can flip a top-k choice (llama.cpp keeps ffn_gate_inp F32 too).
  bool is_router = false;
  // A projection's bias: initialised to 0 in transformers (random here too, for tests), kept F32.
  bool is_bias = false;
  // Vectors (norm gains, biases) are kept F32 everywhere and never quantized.
  bool is_vector() const { return is_norm || is_bias; }
};

// Every tensor of the checkpoint in the order transformers writes them.
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c,
                                           MoeLayout layout = MoeLayout::Split);
// Which Mixtral layout a checkpoint uses (Split for dense models); errors name the tensor missing.
MoeLayout detect_moe_layout(const ModelConfig& c, const Checkpoint& ckpt);
// Fails naming the first tensor of ckpt that specs has no place for (transformers would drop it
// with a warning; here it means the checkpoint and config.json disagree).
void check_no_unknown_tensors(const ModelConfig& c, const Checkpoint& ckpt,
                              const std::vector<TensorSpec>& specs);

// The dtype a tensor is kept in for inference: norms F32; matrices in `requested` (--dtype), else
// as stored (F16 -> F32); a block type (Q8_0, ...) spares the router and rows that are not whole
// blocks (they stay F32) unless the tensor is already stored that way.
DType inference_dtype(const TensorSpec& spec, DType stored, std::optional<DType> requested);

struct LoadOptions {
  // Storage type for matrix weights: F32, BF16, or Q8_0/Q4_0 (quantized at load, ggml's blocks;
  // the MoE router and rows that are not whole blocks stay F32). Unset: keep F32/BF16 as stored,
  // F16 -> F32.
  std::optional<DType> dtype;
  // Repack matrices into oneDNN's blocked layout on first use (faster, one extra copy in memory).
  bool pack_weights = true;
};

// Validates every tensor's presence and shape, then binds zero-copy views where the stored dtype
// is the compute dtype (converted copies otherwise). The checkpoint must outlive nothing: views
// keep their mapping alive.
ModelWeights load_weights(const ModelConfig& c, const Checkpoint& ckpt, const LoadOptions& opt);

}  // namespace lamina
