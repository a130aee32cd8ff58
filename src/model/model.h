// A loaded causal LM (llama, mistral, mixtral) and its forward pass, with the semantics of
// transformers' LlamaForCausalLM / MistralForCausalLM / MixtralForCausalLM.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "kernels/matmul.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace lamina {

class Model {
 public:
  Model(ModelConfig cfg, ModelWeights w, bool pack_weights = true);
  // Reads config.json and the safetensors weights of a HF model directory (memory-mapped).
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opt = {});

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return w_; }
  // A cache for up to `capacity` positions (at most max_position_embeddings).
  KVCache new_cache(int64_t capacity) const;

  // Runs tokens[0, T) at positions cache.len .. cache.len+T-1, appending their keys/values.
  // Writes logits[T, V] when all_logits, else logits[1, V] of the last position only.
  // One call over a whole sequence is the batched forward used for scoring; T = 1 calls decode.
  // With segments (lengths summing to T), the tokens are several packed sequences: positions
  // restart and attention stays inside each (batched scoring of many short requests).
  void forward(const int32_t* tokens, int64_t T, KVCache& cache, float* logits, bool all_logits,
               const std::vector<int32_t>* segments = nullptr) const;

 private:
  void attention_block(const LayerWeights& L, int64_t layer, const float* xn, int64_t T,
                       KVCache& cache, float* out, const std::vector<int32_t>* segments) const;
  void mlp_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const;
  void moe_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const;

  // y[M, N] = x · w^T through the model's packed copy of w.
  void mm(const float* x, int64_t M, const Tensor& w, float* y) const {
    linear(x, M, w, y, false, pack_.get());
  }

  // Activation buffers reused across calls (fresh large allocations would page-fault every time).
  enum Slot { kX, kXn, kTmp, kQ, kAtt, kGate, kUp, kRouter, kGather, kExpertOut, kSlots };
  float* scratch(Slot s, int64_t n) const;

  ModelConfig cfg_;
  std::vector<float> inv_freq_;  // RoPE frequencies [head_dim / 2] (model/rope_frequencies.h)
  ModelWeights w_;
  mutable std::vector<std::vector<float>> scratch_;
  std::unique_ptr<WeightPack> pack_;  // oneDNN-blocked copies of the matrices, made on first use
};

}  // namespace lamina
