// Continued pretraining on raw text (SOLAR's step after depth up-scaling): the training loop with
// gradient accumulation, schedule, clipping, periodic evaluation, atomic checkpoints and resume.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "io/file_lock.h"
#include "train/lora.h"
#include "train/optimizer.h"

namespace lamina {

struct PretrainOptions {
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
  // Train LoRA adapters on a frozen base; checkpoints are PEFT adapters.
  std::optional<LoraConfig> lora;
  // Keep the frozen base (LoRA's, or frozen layers') as bf16 / f16 / q8_0 / q4_0 instead of an F32
  // master copy (ParamStore's FrozenBase); unset: every tensor in F32.
  std::optional<DType> base_dtype;
  uint64_t shard_bytes = 5000000000ull;
};

// The tokenizer files saved with every checkpoint come from tokenizer_dir (default: the model);
// extra_files are written into every checkpoint too (e.g. generation_config.json for SFT).
struct CheckpointExtras {
  std::string tokenizer_dir;
  std::map<std::string, std::string> files;
};

// One training row: T input ids, the ids they predict (-1: none), loss weights, and the lengths
// of the sequences packed into it (empty: one sequence).
struct TrainRow {
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;
  std::vector<int32_t> segments;
  std::vector<float> extra;  // objective-specific (DPO: the pair's reference log-probabilities)
};

// Where rows come from (a text corpus, packed conversations, ...).
class TrainData {
 public:
  virtual ~TrainData() = default;
  virtual int64_t num_train() const = 0;
  virtual int64_t num_val() const = 0;
  virtual void train_row(int64_t i, TrainRow& r) const = 0;
  virtual void val_row(int64_t i, TrainRow& r) const = 0;
  virtual std::string signature() const = 0;  // identifies the data for --resume
  virtual std::string describe() const = 0;   // "N tokens" etc., for errors
};

// Rows held in memory (conversations, preference pairs: small next to pretraining corpora).
class InMemoryData : public TrainData {
 public:
  InMemoryData(std::vector<TrainRow> train, std::vector<TrainRow> val, std::string signature,
               std::string what)
      : train_(std::move(train)),
        val_(std::move(val)),
        sig_(std::move(signature)),
        what_(std::move(what)) {}
  int64_t num_train() const override { return int64_t(train_.size()); }
  int64_t num_val() const override { return int64_t(val_.size()); }
  void train_row(int64_t i, TrainRow& r) const override { r = train_[size_t(i)]; }
  void val_row(int64_t i, TrainRow& r) const override { r = val_[size_t(i)]; }
  std::string signature() const override { return sig_; }
  std::string describe() const override { return std::to_string(train_.size()) + " " + what_; }

 private:
  std::vector<TrainRow> train_, val_;
  std::string sig_, what_;
};

class TrainGraph;
struct Batch;

// What a training step minimises, over the step's micro-batches (rows of length T).
struct ObjectiveResult {
  double loss = 0, aux = 0;
  nlohmann::json metrics =
      nlohmann::json::object();  // extra per-step numbers (TRL's names for DPO)
};
// Sums over a whole optimizer step that normalise its loss; they add up over micro-batches and
// over the ranks of a data-parallel job (core/dist.h).
struct StepTotals {
  double weight = 0;         // target weight: cross-entropy's normaliser
  double pairs = 0;          // DPO pairs
  double chosen_tokens = 0;  // RPO's NLL normaliser
  double micro = 0;          // micro-batches: the MoE aux loss is their mean
};
using MicroBatches = std::vector<std::vector<TrainRow>>;
class Objective {
 public:
  virtual ~Objective() = default;
  // The totals of these micro-batches (default: target weight and count).
  virtual StepTotals totals(const MicroBatches& micro) const;
  // With backward, adds the gradient of the step's loss to the parameters' gradients, normalised
  // by `step` (the whole step's totals, all ranks). Returns this call's share of the loss, aux and
  // metrics: the shares of all ranks add up to the step's values.
  virtual ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                              bool backward, const StepTotals& step) const = 0;
  // These micro-batches are the whole step.
  ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                      bool backward) const {
    return run(g, micro, T, aux_coef, backward, totals(micro));
  }
};
// sum(w * CE) / sum(w) over the whole step (pretraining, SFT, C-RLFT).
class WeightedCrossEntropy : public Objective {
 public:
  using Objective::run;
  ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                      bool backward, const StepTotals& step) const override;
};

struct PretrainResult {
  int64_t steps = 0;
  double last_loss = 0, eval_loss = -1;
  uint64_t peak_rss = 0;
  std::string final_dir, metrics_file, plot_file;
};

PretrainResult run_pretrain(const PretrainOptions& opt);

// Applies the options' freezing / LoRA to p (after any vocabulary change) and checks the output
// directory; shared by pretrain and sft.
// Creates the run directory o.out and locks it (DIR/.lamina.lock) for the caller's lifetime: a
// second run into the same --out fails at once. Rank 0 alone holds it under MPI (null elsewhere).
std::unique_ptr<RunDirLock> lock_run(const PretrainOptions& o);

void prepare_training(const PretrainOptions& o, ParamStore& p);
// The store a run trains, loaded from dir (default o.model): F32 throughout, or with
// --base-dtype the frozen tensors kept as FrozenBase says (refused when nothing is frozen).
ParamStore load_training_store(const PretrainOptions& o, const std::string& dir = "");
// The training loop over any data: rows in seeded order, gradient accumulation with the loss
// normalised by the step's total target weight, clipping, schedule, AdamW, eval, checkpoints,
// resume, metrics and the loss plot. `title` names the run in the plot.
PretrainResult train_loop(const PretrainOptions& o, ParamStore& p, const TrainData& data,
                          const CheckpointExtras& extras, const std::string& title,
                          const Objective* objective = nullptr);
// The newest complete checkpoint-N directory under `out` ("" when none); its step in *step.
std::string latest_checkpoint(const std::string& out, int64_t* step = nullptr);
// Fills a row up to T with a padding segment (pad ids, no targets, weight 0).
void pad_row(TrainRow& r, int64_t T, int32_t pad);
// The seeded held-out split SFT and DPO share: ceil(n * fraction) items (at least one when
// fraction > 0) to `val`, the rest to `train`, in an order shuffled by `seed`.
template <class T>
void seeded_split(std::vector<T>& items, double fraction, uint64_t seed, std::vector<T>& train,
                  std::vector<T>& val) {
  std::vector<size_t> idx(items.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  const size_t n_val =
      fraction > 0 ? std::max<size_t>(1, size_t(std::ceil(double(items.size()) * fraction))) : 0;
  for (size_t i = 0; i < idx.size(); ++i)
    (i < n_val ? val : train).push_back(std::move(items[idx[i]]));
}
// Rows -> a Batch (all rows of length T).
Batch make_batch(const std::vector<TrainRow>& rows, int64_t T);

}  // namespace lamina
