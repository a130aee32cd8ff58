// Continued pretraining on raw text (SOLAR's step after depth up-scaling): the training loop with
// gradient accumulation, schedule, clipping, periodic evaluation, atomic checkpoints and resume.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "train/lora.h"
#include "train/optimizer.h"

namespace lamina {

struct PretrainOptions {
  std::string model, out, cache_dir;
  std::vector<std::string> data;
  int64_t seq_len = 256, batch_size = 4, grad_accum = 1, max_steps = 0, epochs = 1;
  AdamWConfig adam;
  std::string schedule = "cosine";
  double warmup_ratio = 0.0, min_lr_ratio = 0.0, clip = 1.0, val_fraction = 0.05;
  std::optional<double> aux_coef;  // Mixtral: default config.json's router_aux_loss_coef
  int64_t eval_every = 0, save_every = 0, keep = 2, eval_batches = 0, halt_after = 0;
  uint64_t seed = 42;
  bool resume = false, progress = true;
  std::optional<DType> save_dtype;  // default: the model's torch_dtype
  std::vector<int64_t> freeze_layers;
  bool freeze_embeddings = false;
  bool only_new_layers = false;
  DType precision = DType::F32;
  bool recompute = false;  // activation recomputation (gradient checkpointing) per layer
  std::optional<LoraConfig>
      lora;  // train LoRA adapters on a frozen base; checkpoints are PEFT adapters  // bf16: bf16
             // products, F32 master weights, optimizer, norms, loss  // LLaMA-Pro: train the layers
             // listed in MODEL/expanded_layers.json
  uint64_t shard_bytes = 5000000000ull;
};

struct PretrainResult {
  int64_t steps = 0;
  double last_loss = 0, eval_loss = -1;
  uint64_t peak_rss = 0;
  std::string final_dir, metrics_file, plot_file;
};

PretrainResult run_pretrain(const PretrainOptions& opt);

}  // namespace lamina
