// A loaded causal LM (llama, mistral, mixtral, qwen2, qwen3) and its forward pass, with the
// semantics of transformers' LlamaForCausalLM / MistralForCausalLM / MixtralForCausalLM /
// Qwen2ForCausalLM / Qwen3ForCausalLM. The layers are
// model/decoder_block's, the same code training runs; this adds the embedding, the KV cache,
// packed weights and the LM head.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "io/safetensors.h"
#include "kernels/matmul.h"
#include "model/decoder_block.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace lamina {

// Sees the input of every matrix product of a forward pass, before the product (lamina imatrix
// sums x^2 per column for llama.cpp's importance matrix).
class ProductObserver {
 public:
  virtual ~ProductObserver() = default;
  // x[M, K]: the rows product p of `layer` (expert e, else -1) multiplies with its weight.
  virtual void observe(int64_t layer, Product p, int64_t e, const float* x, int64_t M,
                       int64_t K) = 0;
  // x[M, H]: the rows the LM head multiplies (the normed final hidden states).
  virtual void observe_lm_head(const float* x, int64_t M, int64_t H) = 0;
};

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
  // Caches for `slots` sequences of up to slot_capacity positions each (forward_slots).
  SlotKVCache new_slot_cache(int64_t slots, int64_t slot_capacity) const;
  // One pass over several sequences at once (continuous batching): step i runs tokens[0, n) of
  // `slot` at its next positions, appending their keys and values to that slot, attending only
  // within it; every product multiplies all the steps' rows together (the weights read once).
  // Writes logits[i, V] of each step's last token. Each sequence's logits equal what forward()
  // on its own computes (up to the products' float summation order for more rows).
  struct SlotStep {
    const int32_t* tokens = nullptr;
    int64_t n = 0;
    int64_t slot = 0;
  };
  void forward_slots(const std::vector<SlotStep>& steps, SlotKVCache& cache, float* logits) const;
  // Every forward pass from now on shows its products' inputs to o (null: to nobody).
  void observe_products(ProductObserver* o) { observer_ = o; }

 private:
  // Activation buffers reused across calls (fresh large allocations would page-fault every time).
  enum Slot { kX, kXn, kSlots };
  float* scratch(Slot s, int64_t n) const;
  // A matrix in the layout its products read: Q4_0 / Q8_0 repacked (x8), F32 / BF16 into the
  // oneDNN pack; the original's memory freed or its mapped pages released.
  void pack_matrix(Tensor& t);
  // The embedding and every layer over tokens[0, T) of `pass` (positions and spans set), keys
  // and values through kv; returns the residual stream x [T, H] (a scratch buffer).
  float* run_layers(const int32_t* tokens, int64_t T, LayerPass& pass, KVCache& cache,
                    KeyValueRows kv) const;
  // Final norm and LM head: logits[rows, V] of the hidden states h [rows, H].
  void lm_head(const float* h, int64_t rows, float* logits) const;

  ModelConfig cfg_;
  std::vector<float> inv_freq_;        // RoPE frequencies [head_dim / 2] (model/rope_frequencies.h)
  std::vector<float> inv_freq_local_;  // Gemma 3's sliding layers': plain, rope_local_theta
  ModelWeights w_;
  mutable std::vector<std::vector<float>> scratch_;
  mutable LayerActivations layer_;    // the layer being run (model/decoder_block.h)
  std::unique_ptr<WeightPack> pack_;  // oneDNN-blocked copies of the matrices, made on first use
  ProductObserver* observer_ = nullptr;
};

}  // namespace lamina
