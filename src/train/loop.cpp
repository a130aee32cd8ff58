// The training loop every trainer shares (pretrain, sft, dpo): rows in seeded order, gradient
// accumulation, data parallelism over MPI ranks, clipping, schedule, AdamW, evaluation,
// checkpoints and resume, metrics.jsonl and the loss plot.
#include "train/loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "core/dist.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "io/jsonl.h"
#include "io/output_dir.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/plot.h"
#include "train/train_graph.h"

namespace lamina {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::unique_ptr<RunDirLock> lock_run(const TrainOptions& o) {
  return dist::is_root() ? std::make_unique<RunDirLock>(o.out) : nullptr;
}

static_assert(sizeof(StepTotals) == 4 * sizeof(double), "StepTotals is reduced as 4 doubles");

namespace {
// Each rank's share of the loss, aux loss and metrics -> their sums over the ranks (no-op on one).
void sum_over_ranks(ObjectiveResult& r) {
  if (dist::world() == 1) return;
  std::vector<double> sums = {r.loss, r.aux};
  for (auto& [k, v] : r.metrics.items()) sums.push_back(v.get<double>());
  dist::allreduce_sum(sums.data(), sums.size());
  r.loss = sums[0], r.aux = sums[1];
  size_t i = 2;
  for (auto& [k, v] : r.metrics.items()) v = sums[i++];
}
}  // namespace

TrainResult train_loop(const TrainOptions& o, ParamStore& p, const TrainData& data,
                       const CheckpointExtras& extras, const std::string& title,
                       const Objective* objective) {
  WeightedCrossEntropy default_objective;
  const Objective& obj = objective ? *objective : default_objective;
  enable_interrupt_polling();
  const ModelConfig& cfg = p.cfg;
  const int64_t T = o.seq_len, n_val = data.num_val(), n_train = data.num_train();
  const int64_t per_step = o.batch_size * o.grad_accum;
  // Data parallelism: rank r runs micro-batches r, r + W, ... of every step (core/dist.h).
  const int world = dist::world(), rank = dist::rank();
  const bool root = dist::is_root();
  if (o.grad_accum % world != 0)
    fail("--grad-accum ", o.grad_accum, " must be a multiple of the ", world,
         " processes (each runs grad-accum / processes micro-batches per step)");
  if (n_train < per_step)
    fail("--data: ", data.describe(), " make ", n_train, " training sequences of ", T,
         " tokens, fewer than one step needs (", per_step, " = batch size x grad accum)");
  const int64_t steps_per_epoch = n_train / per_step;
  const int64_t total = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
  ScheduleConfig sched{parse_schedule(o.schedule), total, warmup_steps_for(o.warmup_ratio, total),
                       o.min_lr_ratio};
  // transformers adds Mixtral's load-balancing loss only when config.json's output_router_logits
  // is true; --aux-loss-coef sets it explicitly (lamina dpo sets it as TRL 1.16.0 DPOTrainer does).
  const auto orl = cfg.raw.is_object() ? cfg.raw.find("output_router_logits") : cfg.raw.end();
  const bool router_logits = orl != cfg.raw.end() && orl->is_boolean() && orl->get<bool>();
  const double aux_coef =
      cfg.is_moe() ? o.aux_coef.value_or(router_logits ? cfg.router_aux_loss_coef : 0.0) : 0.0;
  const DType save_dtype = o.save_dtype.value_or(cfg.torch_dtype);
  const json sig = run_signature(o, data.signature());
  p.compact_grads();  // the trainable set is final: gradients and moments for it alone
  p.set_compute_dtype(o.precision);
  if (root && p.stored_bytes() > 0)
    std::fprintf(stderr, "frozen base: %s kept as stored / quantized (no F32 copy); %s trainable\n",
                 format_bytes(double(p.stored_bytes())).c_str(),
                 format_count(double(p.num_trainable())).c_str());
  AdamW opt(p, o.adam);
  TrainGraph graph(p);
  graph.set_recompute(o.recompute);
  graph.set_recompute_bf16_inputs(o.recompute_dtype == DType::BF16);
  const std::string metrics_path = o.out + "/metrics.jsonl";
  int64_t start = 0;
  if (o.resume) {
    // Temporaries of a run that was killed (kill -9, power loss) before it could remove them.
    if (root) remove_stale_temporaries(o.out);
    std::string ck = latest_checkpoint(o.out, &start);
    if (ck.empty()) fail(o.out, ": --resume found no checkpoint-* directory");
    load_checkpoint_state(ck, sig, p, opt);
    // Drop metrics an interrupted run logged after its last checkpoint.
    if (root) write_file_atomic(metrics_path, metrics_up_to(metrics_path, start));
  } else {
    int64_t s;
    if (!latest_checkpoint(o.out, &s).empty())
      fail(o.out, ": already holds checkpoints (use --resume, or another --out)");
    if (root) write_file_atomic(metrics_path, "");
  }
  // Rank 0 alone writes metrics, checkpoints and progress.
  std::ofstream metrics(root ? metrics_path : std::string("/dev/null"), std::ios::app);
  auto order = [&](int64_t epoch) {
    std::vector<int64_t> idx(static_cast<size_t>(n_train));
    std::iota(idx.begin(), idx.end(), 0);
    std::mt19937_64 rng(o.seed + uint64_t(epoch));
    std::shuffle(idx.begin(), idx.end(), rng);
    return idx;
  };
  std::vector<int64_t> perm;
  int64_t perm_epoch = -1;
  json eval_metrics;
  auto evaluate = [&]() {
    std::vector<std::vector<TrainRow>> batches;
    for (int64_t v0 = 0; v0 < n_val; v0 += o.batch_size) {
      if (o.eval_batches > 0 && int64_t(batches.size()) >= o.eval_batches) break;
      std::vector<TrainRow> r(static_cast<size_t>(std::min(n_val, v0 + o.batch_size) - v0));
      for (int64_t v = v0; v < v0 + int64_t(r.size()); ++v) data.val_row(v, r[size_t(v - v0)]);
      batches.push_back(std::move(r));
    }
    // Data parallelism: batch k on rank k % world, normalised by all batches' totals, shares
    // summed.
    const StepTotals all = obj.totals(batches);
    MicroBatches mine;
    for (size_t k = size_t(rank); k < batches.size(); k += size_t(world))
      mine.push_back(std::move(batches[k]));
    auto r = obj.run(graph, mine, T, 0.0, false, all);
    sum_over_ranks(r);
    eval_metrics = json::object();
    for (auto& [k, v] : r.metrics.items()) eval_metrics["eval_" + k] = v;
    return r.loss;
  };
  TrainResult res;
  if (n_val > 0 && o.eval_every > 0 && start == 0) {
    // The starting point, so curves show where continued training begins (an up-scaled model
    // starts worse than its base).
    const double l0 = evaluate();
    json e = {{"step", 0}, {"eval_loss", l0}};
    if (!objective) e["eval_ppl"] = std::exp(l0);
    e.update(eval_metrics);
    metrics << e.dump() << "\n" << std::flush;
  }
  Progress bar("pretrain", total, "steps");
  bar.update(start);
  auto t_start = std::chrono::steady_clock::now();
  for (int64_t step = start; step < total; ++step) {
    throw_if_interrupted();
    auto t0 = std::chrono::steady_clock::now();
    p.zero_grads();
    // All rows of the step first: the loss is normalised by the step's total target weight
    // (OpenChat's global weighted token mean; B*T*accum for plain text).
    // This rank's micro-batches: m = rank, rank + world, ... of the step's grad_accum.
    MicroBatches micro(static_cast<size_t>(o.grad_accum / world),
                       std::vector<TrainRow>(size_t(o.batch_size)));
    for (int64_t m = rank; m < o.grad_accum; m += world)
      for (int64_t r = 0; r < o.batch_size; ++r) {
        const int64_t g = (step * o.grad_accum + m) * o.batch_size + r;  // global sequence index
        const int64_t epoch = g / (steps_per_epoch * per_step);
        if (epoch != perm_epoch) perm = order(epoch), perm_epoch = epoch;
        data.train_row(perm[size_t(g % (steps_per_epoch * per_step))],
                       micro[size_t(m / world)][size_t(r)]);
      }
    graph.set_dropout_key(o.seed * 0x100000001B3ull + uint64_t(step));
    // The step's totals, then each rank's share of loss and gradients, added over the ranks.
    StepTotals totals = obj.totals(micro);
    dist::allreduce_sum(&totals.weight, 4);
    ObjectiveResult step_res = obj.run(graph, micro, T, aux_coef, true, totals);
    sum_over_ranks(step_res);
    dist::allreduce_sum(p.grads.f32(), size_t(p.grads.numel()));
    const double loss = step_res.loss, aux = step_res.aux;
    const double gnorm = clip_grad_norm(p, o.clip);
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      int64_t last_good;
      std::string ck = latest_checkpoint(o.out, &last_good);
      fail("step ", step + 1, ": the loss or the gradient is not finite (loss ", loss,
           ", gradient norm ", gnorm,
           "); stopped without updating. Last good checkpoint: ", ck.empty() ? "none" : ck,
           ". Try a lower --lr or a stronger --clip.");
    }
    const double lr = o.adam.lr * lr_factor(sched, step);
    if (!opt.update(lr)) {
      int64_t last_good;
      std::string ck = latest_checkpoint(o.out, &last_good);
      fail("step ", step + 1, ": the update made parameters or optimizer state non-finite (lr ", lr,
           "); nothing of this step was saved. Last good checkpoint: ", ck.empty() ? "none" : ck,
           ". Try a lower --lr or a stronger --clip.");
    }
    p.refresh_compute();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json m = {{"step", step + 1},
              {"loss", loss},
              {"lr", lr},
              {"grad_norm", gnorm},
              {"tokens_per_s", double(per_step * T) / dt},
              {"epoch", double((step + 1) * per_step) / double(n_train)},
              {"elapsed_s",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()}};
    if (cfg.is_moe()) m["aux_loss"] = aux;
    for (auto& [k, v] : step_res.metrics.items()) m[k] = v;
    m["peak_rss_mb"] = double(peak_rss_bytes()) / 1e6;
    metrics << m.dump() << "\n" << std::flush;
    res.last_loss = loss;
    char note[160];
    std::snprintf(note, sizeof note, "loss %.4f lr %.2e gnorm %.3f %.0f tok/s", loss, lr, gnorm,
                  double(per_step * T) / dt);
    std::string note_s = note;
    if (step_res.metrics.contains("rewards/margins")) {  // DPO: TRL's headline numbers
      std::snprintf(note, sizeof note, " margin %.3f acc %.2f",
                    step_res.metrics["rewards/margins"].get<double>(),
                    step_res.metrics["rewards/accuracies"].get<double>());
      note_s += note;
    }
    bar.set_note(note_s);
    if (o.progress && root) bar.update(step + 1);
    const bool last = step + 1 == total;
    if (n_val > 0 && ((o.eval_every > 0 && (step + 1) % o.eval_every == 0) || last)) {
      res.eval_loss = evaluate();
      json e = {{"step", step + 1}, {"eval_loss", res.eval_loss}};
      if (!objective) e["eval_ppl"] = std::exp(res.eval_loss);
      e.update(eval_metrics);
      metrics << e.dump() << "\n" << std::flush;
    }
    if (root && ((o.save_every > 0 && (step + 1) % o.save_every == 0) || last))
      save_checkpoint(o, p, opt, step + 1, sig, save_dtype, extras);
    res.steps = step + 1;
    if (o.halt_after > 0 && step + 1 >= o.halt_after) break;
  }
  bar.finish();
  metrics.close();
  double sync = 0;  // every rank waits for rank 0's last checkpoint
  dist::allreduce_sum(&sync, 1);
  res.metrics_file = metrics_path;
  res.peak_rss = peak_rss_bytes();
  int64_t s;
  res.final_dir = latest_checkpoint(o.out, &s);
  res.plot_file = o.out + "/loss.svg";
  if (!root) return res;
  // Plotted from what metrics.jsonl holds (including earlier runs' lines when resumed).
  plot_training_metrics(metrics_path, o.out, title);
  return res;
}

}  // namespace lamina
