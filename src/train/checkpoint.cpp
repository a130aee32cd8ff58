// Checkpoints of a training run: checkpoint-N directories (the model or PEFT adapter, the
// optimizer state of every trainable tensor, trainer_state.json with the run's signature), the
// newest one found again, and its state loaded back for --resume.
#include "train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer_files.h"
#include "train/lora.h"

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

}  // namespace

json run_signature(const TrainOptions& o, const std::string& data_signature) {
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

void save_checkpoint(const TrainOptions& o, const ParamStore& p, AdamW& opt, int64_t step,
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

void load_checkpoint_state(const std::string& ck, const json& sig, ParamStore& p, AdamW& opt) {
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
}

std::string metrics_up_to(const std::string& metrics_path, int64_t step) {
  std::string text;
  if (!file_exists(metrics_path)) return text;
  for_each_jsonl_line(metrics_path, [&](const std::string& line, int64_t n) {
    const json j = parse_json_line(line, metrics_path + ":" + std::to_string(n));
    if (j.value("step", int64_t(0)) <= step) text += line + "\n";
  });
  return text;
}

}  // namespace lamina
