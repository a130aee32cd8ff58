#include "train/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "core/dist.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "io/jsonl.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "tokenizer/tokenizer_files.h"
#include "train/corpus.h"
#include "train/lora.h"
#include "train/plot.h"
#include "train/train_graph.h"

namespace lamina {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// N for a directory named exactly "checkpoint-N"; -1 for anything else (its temporaries
// checkpoint-N.tmp-PID and lock files checkpoint-N.lock included).
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind("checkpoint-", 0) != 0 || name.size() == 11) return -1;
  for (size_t i = 11; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::atoll(name.c_str() + 11);
}

// The training run's fixed choices: a checkpoint resumes only a run with the same ones.
json run_signature(const PretrainOptions& o, const std::string& data_signature) {
  json j = {{"seq_len", o.seq_len}, {"batch_size", o.batch_size}, {"grad_accum", o.grad_accum},
            {"seed", o.seed},       {"data", data_signature},     {"val_fraction", o.val_fraction}};
  if (o.lora)
    j["lora"] = {{"r", o.lora->r},
                 {"alpha", o.lora->alpha},
                 {"targets", o.lora->targets},
                 {"dropout", o.lora->dropout}};
  if (o.lora && o.lora->rslora) j["lora"]["rslora"] = true;  // absent otherwise: older runs resume
  if (o.lora && !o.lora->rank_pattern.empty()) j["lora"]["rank_pattern"] = o.lora->rank_pattern;
  if (o.lora && !o.lora->alpha_pattern.empty()) j["lora"]["alpha_pattern"] = o.lora->alpha_pattern;
  if (o.base_dtype) j["base_dtype"] = dtype_name(*o.base_dtype);
  return j;
}

void save_model_dir(const ParamStore& p, const std::string& src_model, const std::string& dir,
                    DType dtype, uint64_t shard) {
  copy_tokenizer_files(src_model, dir);
  ModelConfig c = p.cfg;
  c.torch_dtype = dtype;
  c.save(dir + "/config.json");
  p.save_weights(dir, dtype, shard);
}

// The optimizer state of every trainable tensor: F32 master value and both moments, named
// "param/NAME", "exp_avg/NAME", "exp_avg_sq/NAME" (frozen tensors come from --model again).
const char* kOptParts[] = {"param/", "exp_avg/", "exp_avg_sq/"};

void save_checkpoint(const PretrainOptions& o, const ParamStore& p, AdamW& opt, int64_t step,
                     const json& sig, DType dtype, const CheckpointExtras& extras) {
  OutputDir d(o.out + "/checkpoint-" + std::to_string(step), true);
  const std::string tok_dir =
      extras.tokenizer_dir.empty() ? o.tokenizer_dir() : extras.tokenizer_dir;
  if (o.lora) {
    // A PEFT adapter (plus the tokenizer, so the directory is self-describing).
    save_lora_adapter(p, *o.lora, d.path(), fs::absolute(o.model).string());
    copy_tokenizer_files(tok_dir, d.path());
  } else {
    save_model_dir(p, tok_dir, d.path(), dtype, o.shard_bytes);
  }
  for (auto& [name, text] : extras.files) write_file_atomic(d.path() + "/" + name, text);
  std::vector<SafetensorsWriter::Planned> plan;
  for (const char* part : kOptParts)
    for (size_t i = 0; i < p.specs.size(); ++i)
      if (p.trainable[i]) plan.push_back({part + p.specs[i].name, DType::F32, p.specs[i].shape});
  SafetensorsWriter w(d.path(), plan, 0, {{"format", "lamina-optimizer"}}, "optimizer");
  const float* src[] = {p.params.f32(), opt.exp_avg().f32(), opt.exp_avg_sq().f32()};
  for (int k = 0; k < 3; ++k)
    for (size_t i = 0; i < p.specs.size(); ++i)
      if (p.trainable[i])
        w.write(kOptParts[k] + p.specs[i].name, src[k] + (k == 0 ? p.offset[i] : p.goffset[i]),
                size_t(p.numel(i)) * 4);
  w.finish();
  json st = {{"step", step}, {"optimizer_step", opt.step()}, {"run", sig}};
  write_file_atomic(d.path() + "/trainer_state.json", st.dump(2) + "\n");
  d.commit();
  // Keep the newest `keep` checkpoints.
  std::vector<std::pair<int64_t, std::string>> all;
  for (auto& e : fs::directory_iterator(o.out)) {
    const int64_t s = checkpoint_step(e.path().filename().string());
    if (s >= 0 && e.is_directory()) all.push_back({s, e.path().string()});
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; o.keep > 0 && i + size_t(o.keep) < all.size(); ++i)
    fs::remove_all(all[i].second);
}

}  // namespace

std::string latest_checkpoint(const std::string& out, int64_t* step) {
  std::string best;
  int64_t best_step = -1;
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return "";
  for (auto& e : fs::directory_iterator(out, ec)) {
    const int64_t s = checkpoint_step(e.path().filename().string());
    if (s < 0 || !e.is_directory()) continue;
    if (s > best_step) best_step = s, best = e.path().string();
  }
  if (step) *step = best_step;
  return best;
}

std::unique_ptr<RunDirLock> lock_run(const PretrainOptions& o) {
  return dist::is_root() ? std::make_unique<RunDirLock>(o.out) : nullptr;
}

namespace {
// The layers a run freezes (and whether the embeddings, LM head and final norm too), from
// --freeze-layers, --freeze-embeddings and --only-new-layers; checked against the config.
struct FreezePlan {
  std::vector<int64_t> layers;
  bool embeddings = false;
};
FreezePlan freeze_plan(const PretrainOptions& o, const ModelConfig& cfg) {
  FreezePlan f{o.freeze_layers, o.freeze_embeddings};
  if (o.only_new_layers) {
    const std::string path = o.model + "/expanded_layers.json";
    if (!file_exists(path))
      fail(path,
           ": not found (--only-new-layers needs a model made by lamina upscale --expand-every)");
    json j = read_json_file(path);
    for (auto& l : j.at("original_layers")) f.layers.push_back(l.get<int64_t>());
    f.embeddings = true;
  }
  for (int64_t l : f.layers)
    if (l < 0 || l >= cfg.num_hidden_layers)
      fail("--freeze-layers: layer ", l, " is outside [0, ", cfg.num_hidden_layers, ")");
  if (o.lora && (!f.layers.empty() || f.embeddings))
    fail("--lora trains only the adapters: drop --freeze-* / --only-new-layers");
  return f;
}

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 for tensors outside the layers.
int64_t layer_of(const std::string& name) {
  return name.rfind("model.layers.", 0) == 0 ? std::stoll(name.substr(13)) : -1;
}
}  // namespace

namespace {
// The tokenizer paired with a GGUF base must be the file's own: same number of pieces and the
// same piece at every id (GGUF carries its vocabulary in tokenizer.ggml.tokens).
void check_gguf_tokenizer(const GgufCheckpoint& ck, const std::string& path,
                          const std::string& tok_dir) {
  Tokenizer tok = Tokenizer::load(tok_dir);
  if (tok.size() > ck.cfg.vocab_size)
    fail("--tokenizer ", tok_dir, ": ", tok.size(), " tokens, but ", path, " has ",
         ck.cfg.vocab_size, " embedding rows: not this model's tokenizer");
  if (ck.vocab.empty()) return;
  if (int64_t(ck.vocab.size()) != tok.size())
    fail("--tokenizer ", tok_dir, ": ", tok.size(), " tokens, but ", path, " was written with ",
         ck.vocab.size(), ": not this model's tokenizer");
  for (int64_t i = 0; i < tok.size(); ++i)
    if (tok.piece(int32_t(i)) != ck.vocab[size_t(i)])
      fail("--tokenizer ", tok_dir, ": token ", i, " is '", tok.piece(int32_t(i)), "', ", path,
           " has '", ck.vocab[size_t(i)], "' there: not this model's tokenizer");
}
}  // namespace

ParamStore load_training_store(const PretrainOptions& o, const std::string& dir_arg) {
  const std::string dir = dir_arg.empty() ? o.model : dir_arg;
  if (is_gguf_file(dir)) {
    // A GGUF file is a frozen base used as its blocks are: LoRA only, paired with its tokenizer.
    if (!o.lora) fail(dir, ": a GGUF file can be trained over only as a frozen base: add --lora-r");
    if (o.base_dtype)
      fail(dir, ": a GGUF base is used in the types it is stored in; drop --base-dtype");
    if (o.tokenizer.empty())
      fail(dir, ": a GGUF model needs --tokenizer DIR (the directory with its tokenizer.model)");
    GgufCheckpoint ck = read_gguf_checkpoint(dir);
    check_gguf_tokenizer(ck, dir, o.tokenizer);
    return ParamStore::from_gguf(ck);
  }
  if (!o.tokenizer.empty())
    fail("--tokenizer ", o.tokenizer, ": only with a GGUF --model (", dir,
         " carries its own tokenizer)");
  if (!o.base_dtype) return ParamStore::load(dir);
  const DType bt = *o.base_dtype;
  if (bt != DType::BF16 && bt != DType::F16 && bt != DType::Q8_0 && bt != DType::Q4_0 &&
      bt != DType::NF4)
    fail("--base-dtype: keeps the frozen base in bf16, f16, q8_0, q4_0 or nf4, not ",
         dtype_name(bt));
  const ModelConfig cfg = ModelConfig::load(dir);
  const FreezePlan f = freeze_plan(o, cfg);
  if (!o.lora && f.layers.empty() && !f.embeddings)
    fail(
        "--base-dtype keeps a frozen base out of F32: use it with --lora-r, --only-new-layers "
        "or --freeze-layers / --freeze-embeddings (every tensor is trained otherwise)");
  FrozenBase base;
  base.dtype = bt;
  base.frozen = [lora = o.lora.has_value(), f](const TensorSpec& sp) {
    if (lora) return true;  // LoRA: the whole base is frozen
    const int64_t l = layer_of(sp.name);
    return l < 0 ? f.embeddings : std::find(f.layers.begin(), f.layers.end(), l) != f.layers.end();
  };
  return ParamStore::load(dir, base);
}

void prepare_training(const PretrainOptions& o, ParamStore& p) {
  if (o.seq_len < 2) fail("--seq-len must be at least 2");
  if (o.batch_size < 1 || o.grad_accum < 1) fail("--batch-size and --grad-accum must be positive");
  if (o.val_fraction < 0 || o.val_fraction >= 1) fail("--val-fraction must be in [0, 1)");
  const ModelConfig& cfg = p.cfg;
  if (o.seq_len > cfg.max_position_embeddings)
    fail("--seq-len ", o.seq_len, " exceeds max_position_embeddings ", cfg.max_position_embeddings);
  const FreezePlan f = freeze_plan(o, cfg);
  p.freeze(f.layers, f.embeddings);
  if (o.lora) add_lora(p, *o.lora);
  if (p.num_trainable() == 0) fail("every parameter is frozen: nothing to train");
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out))
    fail(o.out, ": cannot create the output directory: ", ec ? ec.message() : "not a directory");
}

namespace {

// Text corpus windows: row i is window i (training), validation windows follow the training ones.
class CorpusData : public TrainData {
 public:
  CorpusData(TokenCorpus c, int64_t T, double val_fraction) : c_(std::move(c)), T_(T) {
    const int64_t w = c_.num_windows(T);
    n_val_ =
        val_fraction > 0 ? std::max<int64_t>(1, int64_t(std::ceil(double(w) * val_fraction))) : 0;
    n_train_ = std::max<int64_t>(0, w - n_val_);
  }
  int64_t num_train() const override { return n_train_; }
  int64_t num_val() const override { return n_val_; }
  void train_row(int64_t i, TrainRow& r) const override { row(i, r); }
  void val_row(int64_t i, TrainRow& r) const override { row(n_train_ + i, r); }
  std::string signature() const override { return fs::path(c_.cache_file()).filename().string(); }
  std::string describe() const override { return std::to_string(c_.num_tokens()) + " tokens"; }

 private:
  void row(int64_t i, TrainRow& r) const {
    c_.window(i, T_, ids_);
    r.tokens.assign(ids_.begin(), ids_.end() - 1);
    r.targets.assign(ids_.begin() + 1, ids_.end());
    r.weights.assign(size_t(T_), 1.0f);
    r.segments.clear();
  }
  TokenCorpus c_;
  int64_t T_, n_train_ = 0, n_val_ = 0;
  mutable std::vector<int32_t> ids_;
};

}  // namespace

void pad_row(TrainRow& r, int64_t T, int32_t pad) {
  const int64_t fill = T - int64_t(r.tokens.size());
  if (fill <= 0) return;
  r.tokens.insert(r.tokens.end(), size_t(fill), pad);
  r.targets.insert(r.targets.end(), size_t(fill), -1);
  r.weights.insert(r.weights.end(), size_t(fill), 0.0f);
  r.segments.push_back(int32_t(fill));
}

Batch make_batch(const std::vector<TrainRow>& rows, int64_t T) {
  Batch b;
  b.B = int64_t(rows.size());
  b.T = T;
  for (auto& r : rows) {
    b.tokens.insert(b.tokens.end(), r.tokens.begin(), r.tokens.end());
    b.targets.insert(b.targets.end(), r.targets.begin(), r.targets.end());
    b.weights.insert(b.weights.end(), r.weights.begin(), r.weights.end());
    b.segments.push_back(r.segments);
  }
  return b;
}

StepTotals Objective::totals(const MicroBatches& micro) const {
  StepTotals t;
  t.micro = double(micro.size());
  for (auto& rows : micro)
    for (auto& row : rows)
      for (size_t i = 0; i < row.targets.size(); ++i)
        if (row.targets[i] >= 0) t.weight += row.weights[i];
  return t;
}

ObjectiveResult WeightedCrossEntropy::run(TrainGraph& g, const MicroBatches& micro, int64_t T,
                                          double aux_coef, bool backward,
                                          const StepTotals& step) const {
  // The step's total target weight normalises: micro-batches (and ranks) add up to one mean.
  double loss_sum = 0;
  ObjectiveResult r;
  for (auto& rows : micro) {
    auto st = g.step(make_batch(rows, T), step.weight, aux_coef / step.micro, backward);
    loss_sum += st.loss_sum, r.aux += st.aux_loss / step.micro;
  }
  r.loss = step.weight > 0 ? loss_sum / step.weight : NAN;
  return r;
}

PretrainResult run_pretrain(const PretrainOptions& o) {
  enable_interrupt_polling();
  const auto lock = lock_run(o);
  ParamStore p = load_training_store(o);
  Tokenizer tok = Tokenizer::load(o.tokenizer_dir());
  prepare_training(o, p);
  std::string cache = o.cache_dir.empty() ? o.out + "/.cache" : o.cache_dir;
  CorpusData data(
      TokenCorpus::build(o.data, tok, o.tokenizer_dir() + "/tokenizer.model", cache, o.progress),
      o.seq_len, o.val_fraction);
  return train_loop(o, p, data, {}, "lamina pretrain: " + fs::path(o.model).filename().string());
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

PretrainResult train_loop(const PretrainOptions& o, ParamStore& p, const TrainData& data,
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
  const std::string metrics_path = o.out + "/metrics.jsonl";
  int64_t start = 0;
  if (o.resume) {
    // Temporaries of a run that was killed (kill -9, power loss) before it could remove them.
    if (root) remove_stale_temporaries(o.out);
    std::string ck = latest_checkpoint(o.out, &start);
    if (ck.empty()) fail(o.out, ": --resume found no checkpoint-* directory");
    json st = read_json_file(ck + "/trainer_state.json");
    if (st["run"] != sig)
      fail(ck, ": was written by a run with other settings (", st["run"].dump(),
           "); resume with the same ones");
    SafetensorsFile f(ck + "/optimizer.safetensors");
    float* dst[] = {p.params.f32(), opt.exp_avg().f32(), opt.exp_avg_sq().f32()};
    for (int k = 0; k < 3; ++k)
      for (size_t i = 0; i < p.specs.size(); ++i) {
        if (!p.trainable[i]) continue;
        const std::string name = kOptParts[k] + p.specs[i].name;
        const TensorInfo* ti = f.find(name);
        if (!ti || ti->shape != p.specs[i].shape)
          fail(ck, "/optimizer.safetensors: missing or mis-shaped '", name, "'");
        std::memcpy(dst[k] + (k == 0 ? p.offset[i] : p.goffset[i]), f.tensor(*ti).data,
                    size_t(p.numel(i)) * 4);
      }
    opt.set_step(st["optimizer_step"].get<int64_t>());
    p.refresh_compute();
    // Drop metrics an interrupted run logged after its last checkpoint.
    std::vector<std::string> keep;
    if (file_exists(metrics_path)) {
      std::ifstream in(metrics_path);
      for (std::string line; std::getline(in, line);)
        if (!line.empty() && json::parse(line).value("step", int64_t(0)) <= start)
          keep.push_back(line);
    }
    std::string text;
    for (auto& l : keep) text += l + "\n";
    if (root) write_file_atomic(metrics_path, text);
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
  PretrainResult res;
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
  // Plot what metrics.jsonl holds (including earlier runs' lines when resumed).
  Series train{"train loss", "#1f77b4", {}}, eval{"eval loss", "#d62728", {}};
  Series rc{"rewards/chosen", "#2ca02c", {}}, rr{"rewards/rejected", "#d62728", {}},
      rm{"rewards/margins", "#1f77b4", {}};
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line);
    if (j.contains("rewards/margins")) {
      const double st = j["step"].get<double>();
      rc.points.push_back({st, j["rewards/chosen"].get<double>()});
      rr.points.push_back({st, j["rewards/rejected"].get<double>()});
      rm.points.push_back({st, j["rewards/margins"].get<double>()});
    }
    if (j.contains("loss"))
      train.points.push_back({j["step"].get<double>(), j["loss"].get<double>()});
    if (j.contains("eval_loss") && j["eval_loss"].is_number())
      eval.points.push_back({j["step"].get<double>(), j["eval_loss"].get<double>()});
  }
  write_svg_plot(res.plot_file, title, {train, eval});
  if (!rm.points.empty()) write_svg_plot(o.out + "/rewards.svg", title + ": rewards", {rc, rr, rm});
  return res;
}

}  // namespace lamina
