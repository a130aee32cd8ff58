// The options every training run shares (pretrain, sft, dpo): model, data, schedule, optimizer,
// freezing / LoRA / frozen-base storage, checkpoints; and what a run reports when it ends.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "train/lora.h"
#include "train/optimizer.h"

namespace lamina {

struct TrainOptions {
  std::string model, out, cache_dir;
  // The tokenizer (and chat template, generation config) directory: --tokenizer, needed with a
  // GGUF --model; else the model directory itself.
  std::string tokenizer;
  const std::string& tokenizer_dir() const { return tokenizer.empty() ? model : tokenizer; }
  std::vector<std::string> data;
  int64_t seq_len = 256, batch_size = 4, grad_accum = 1, max_steps = 0, epochs = 1;
  AdamWConfig adam;
  std::string schedule = "cosine";
  double warmup_ratio = 0.0, min_lr_ratio = 0.0, clip = 1.0, val_fraction = 0.05;
  // Mixtral's load-balancing loss weight; default: config.json's router_aux_loss_coef when its
  // output_router_logits is true (as transformers and TRL), else 0.
  std::optional<double> aux_coef;
  int64_t eval_every = 0, save_every = 0, keep = 2, eval_batches = 0, halt_after = 0;
  uint64_t seed = 42;
  bool resume = false, progress = true;
  std::optional<DType> save_dtype;  // default: the model's torch_dtype
  std::vector<int64_t> freeze_layers;
  bool freeze_embeddings = false;
  bool only_new_layers = false;
  DType precision = DType::F32;  // bf16: bf16 products; F32 masters, optimizer, norms, loss
  bool recompute = false;        // activation recomputation (gradient checkpointing) per layer
  DType recompute_dtype = DType::F32;  // the type each layer's kept input is stored in (f32, bf16)
  // Train LoRA adapters on a frozen base; checkpoints are PEFT adapters.
  std::optional<LoraConfig> lora;
  // Keep the frozen base (LoRA's, or frozen layers') as bf16 / f16 / q8_0 / q4_0 instead of an F32
  // master copy (ParamStore's FrozenBase); unset: every tensor in F32.
  std::optional<DType> base_dtype;
  uint64_t shard_bytes = 5000000000ull;
};

struct TrainResult {
  int64_t steps = 0;
  double last_loss = 0, eval_loss = -1;
  uint64_t peak_rss = 0;
  std::string final_dir, metrics_file, plot_file;
};

}  // namespace lamina
