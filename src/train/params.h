// Trainable parameters, their gradients and AdamW moments, each in one contiguous F32 buffer laid
// out in model_tensor_specs order (llm.c's layout): one index serves loading, saving, the
// optimizer and the gradient check.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"
#include "model/gguf_model.h"
#include "model/weights.h"

namespace lamina {

// A frozen base kept out of the F32 buffer (--base-dtype): the matrices `frozen` selects stay in
// `dtype` — bf16 straight from the memory-mapped checkpoint when stored so, else converted or
// quantized at load (Q8_0 / Q4_0: ggml's blocks) — and are only ever widened a slab at a time for
// their products (kernels/widened_matmul.h). Norms and MoE routers stay F32 (tiny; a rounded
// router can flip a top-k choice), as do rows that are not whole blocks.
struct FrozenBase {
  DType dtype = DType::BF16;
  std::function<bool(const TensorSpec&)> frozen;  // which tensors are frozen
};

struct ParamStore {
  ModelConfig cfg;
  MoeLayout layout = MoeLayout::Split;
  std::vector<TensorSpec> specs;
  // Element offset of spec i in params; kNoParam for a frozen-base tensor kept in `stored`.
  static constexpr size_t kNoParam = ~size_t(0);
  std::vector<size_t> offset;
  size_t total = 0;  // elements of params
  // Per spec: the tensor itself when kept outside params (a frozen base), else undefined.
  std::vector<Tensor> stored;
  // Per layer: the stored tensors that are views of a memory-mapped file (bf16 as stored, GGUF
  // blocks). release_layer_pages drops their pages from the resident set once a pass is done
  // with the layer, so a mapped 7B base costs one layer of resident pages, not the whole file
  // (the next pass faults them back from the page cache).
  std::vector<std::vector<size_t>> mapped_by_layer;
  void release_layer_pages(int64_t layer) const;
  // Offsets in grads and in AdamW's moments: every tensor until compact_grads(), then trainable
  // tensors only (kNoGrad for frozen ones).
  static constexpr size_t kNoGrad = ~size_t(0);
  std::vector<size_t> goffset;
  size_t gtotal = 0;
  Tensor params;                // F32 [total]
  Tensor grads;                 // F32 [gtotal]
  ModelWeights weights;         // views into params, bound as the forward pass expects
  ModelWeights grad_views;      // the same views into grads
  std::vector<bool> trainable;  // per spec; frozen tensors keep their values (no update, no decay)
  // What the forward and backward products read: `weights` itself in F32 training; in bf16
  // mixed precision, bf16 copies of the matrices (norms and MoE routers stay F32 views).
  DType compute_dtype = DType::F32;
  ModelWeights compute;
  std::vector<Tensor> compute_copies;  // per spec (bf16 matrices), empty in F32

  // An empty (zeroed, all trainable) store laid out for cfg; specs with outside[i] get no place
  // in params (their tensor goes in stored[i]).
  static ParamStore allocate(const ModelConfig& cfg, MoeLayout layout,
                             const std::vector<bool>& outside = {});
  // (Re)binds weight, gradient and compute views into the current buffers.
  void bind_views();
  // F32 master copy of a checkpoint (any stored dtype); with `base`, the frozen matrices it
  // selects are kept as FrozenBase says instead (frozen, no F32 copy).
  static ParamStore load(const std::string& model_dir,
                         const std::optional<FrozenBase>& base = std::nullopt);
  static ParamStore from_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt,
                                    const std::optional<FrozenBase>& base = std::nullopt);

  // A GGUF file (llama.cpp's, or export-gguf's) as a frozen base: its matrices used as the file
  // holds them (views of its map, Q/K rows un-permuted copies; any type the widened products
  // read: F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), norms and the router in F32.
  static ParamStore from_gguf(const GgufCheckpoint& ck);

  bool has_param(size_t i) const { return offset[i] != kNoParam; }
  float* param(size_t i) { return params.f32() + offset[i]; }  // has_param(i) only
  void note_mapped(size_t i);  // records stored[i] as a view of a mapped file
  // Bytes of the frozen base kept outside params (0 without --base-dtype).
  size_t stored_bytes() const;
  bool has_grad(size_t i) const { return goffset[i] != kNoGrad; }
  float* grad(size_t i) { return grads.f32() + goffset[i]; }  // has_grad(i) only
  // Gradients (and so AdamW's moments) for trainable tensors only, from here on: call once the
  // trainable set is final (after freezing / LoRA). LoRA on a 7B model then keeps adapter-sized
  // gradients and moments instead of 3 x 28 GB of F32. Frozen tensors get no gradient view.
  void compact_grads();
  int64_t numel(size_t i) const { return shape_numel(specs[i].shape); }
  void zero_grads();
  // Appends tensors (e.g. LoRA adapters) to every buffer, rebinding all views; init fills each
  // new tensor's F32 values. New tensors are trainable.
  void append(const std::vector<TensorSpec>& extra,
              const std::function<void(size_t, float*)>& init);
  double lora_scale = 0;                  // alpha / r when LoRA adapters are bound
  std::vector<std::string> lora_targets;  // PEFT module names adapted (add_lora)
  double lora_dropout = 0;                // on the adapters' input, during training
  // Grows the vocabulary to V rows (embedding and LM head); new rows are the mean of the existing
  // ones (as transformers' resize_token_embeddings with mean init). Before freezing / LoRA.
  void resize_vocab(int64_t V);
  // The vocabulary before resize_vocab grew it (0: never grown). A LoRA adapter then carries the
  // grown embedding and LM head, as PEFT saves them for a resized base.
  int64_t base_vocab = 0;
  // F32 or BF16; BF16 allocates the copies. refresh_compute() after every update of the masters.
  void set_compute_dtype(DType t);
  void refresh_compute();
  // Freezes the layers in `layers` and, when freeze_embeddings, the embedding and LM head
  // (tied or not). The final norm follows freeze_embeddings too (LLaMA-Pro trains only new blocks).
  void freeze(const std::vector<int64_t>& layers, bool freeze_embeddings);
  int64_t num_trainable() const;
  // Weight decay applies to matrices only (norm gains and biases excluded), as TRL/HF do.
  bool decays(size_t i) const { return specs[i].shape.size() >= 2; }
  // Writes model.safetensors (sharded as needed) in `dtype` into dir.
  void save_weights(const std::string& dir, DType dtype, uint64_t shard_bytes) const;
};

}  // namespace lamina
