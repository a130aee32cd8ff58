#include "train/lora.h"

#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer_files.h"

namespace lamina {
using json = nlohmann::json;

namespace {

int target_index(const std::string& name) {
  for (int t = 0; t < kLoraTargets; ++t)
    if (name == lora_module_name(t)) return t;
  return -1;
}

bool is_attention(int t) {
  return t <= kLoraO;
}

// [out, in] of a projection.
std::pair<int64_t, int64_t> proj_shape(const ModelConfig& c, int t) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.num_attention_heads * c.head_dim,
                KV = c.num_key_value_heads * c.head_dim;
  switch (t) {
    case kLoraQ:
      return {Q, H};
    case kLoraK:
    case kLoraV:
      return {KV, H};
    case kLoraO:
      return {H, Q};
    case kLoraGate:
    case kLoraUp:
      return {I, H};
    default:
      return {H, I};
  }
}

std::string base_name(int64_t layer, int t) {
  return "model.layers." + std::to_string(layer) + (is_attention(t) ? ".self_attn." : ".mlp.") +
         lora_module_name(t) + ".weight";
}

}  // namespace

std::vector<std::string> parse_lora_targets(const std::string& list) {
  std::vector<std::string> out;
  if (list == "all") {
    for (int t = 0; t < kLoraTargets; ++t) out.push_back(lora_module_name(t));
    return out;
  }
  std::stringstream ss(list);
  for (std::string n; std::getline(ss, n, ',');) {
    if (n.empty()) continue;
    if (n.find("_proj") == std::string::npos) n += "_proj";
    if (target_index(n) < 0)
      fail("--lora-targets: unknown module '", n, "' (q, k, v, o, gate, up, down, or all)");
    out.push_back(n);
  }
  if (out.empty()) fail("--lora-targets: no modules");
  return out;
}

std::string peft_lora_name(int64_t layer, int t, bool is_b) {
  std::string b = base_name(layer, t);
  return "base_model.model." + b.substr(0, b.size() - 7) +
         (is_b ? ".lora_B.weight" : ".lora_A.weight");
}

void add_lora(ParamStore& p, const LoraConfig& c) {
  if (c.r < 1) fail("--lora-r must be positive");
  std::vector<TensorSpec> extra;
  std::vector<int> which;
  for (auto& name : c.targets) {
    int t = target_index(name);
    if (t < 0) fail("LoRA: unknown target module '", name, "'");
    if (p.cfg.is_moe() && !is_attention(t))
      fail(
          "LoRA on Mixtral's expert projections is not supported yet (target attention: q, k, v, "
          "o)");
    which.push_back(t);
  }
  for (int64_t l = 0; l < p.cfg.num_hidden_layers; ++l)
    for (int t : which) {
      auto [out, in] = proj_shape(p.cfg, t);
      extra.push_back(
          {peft_lora_name(l, t, false), {c.r, in}, false, [l, t](ModelWeights& w, const Tensor& x) {
             w.layers[size_t(l)].lora[t].a = x;
           }});
      extra.push_back(
          {peft_lora_name(l, t, true), {out, c.r}, false, [l, t](ModelWeights& w, const Tensor& x) {
             w.layers[size_t(l)].lora[t].b = x;
           }});
    }
  for (size_t i = 0; i < p.trainable.size(); ++i) p.trainable[i] = false;  // the base is frozen
  std::mt19937_64 rng(c.seed);
  p.append(extra, [&](size_t i, float* v) {
    const auto& sp = extra[i];
    const int64_t n = shape_numel(sp.shape);
    if (i % 2 == 0) {
      // kaiming_uniform_(a=sqrt(5)) as PEFT/nn.Linear: bound = 1/sqrt(fan_in)
      const double bound = 1.0 / std::sqrt(double(sp.shape[1]));
      std::uniform_real_distribution<double> u(-bound, bound);
      for (int64_t k = 0; k < n; ++k) v[k] = float(u(rng));
    } else {
      std::fill(v, v + n, 0.f);
    }
  });
  p.lora_scale = c.scale();
  if (c.dropout < 0 || c.dropout >= 1) fail("--lora-dropout must be in [0, 1)");
  p.lora_dropout = c.dropout;
}

void save_lora_adapter(const ParamStore& p, const LoraConfig& c, const std::string& dir,
                       const std::string& base_model) {
  std::vector<SafetensorsWriter::Planned> plan;
  std::vector<size_t> idx;
  for (size_t i = 0; i < p.specs.size(); ++i)
    if (p.specs[i].name.rfind("base_model.model.", 0) == 0) {
      plan.push_back({p.specs[i].name, DType::F32, p.specs[i].shape});
      idx.push_back(i);
    }
  // The base the adapter was trained over: its storage type when it was kept frozen out of F32
  // (--base-dtype), in the safetensors metadata and the adapter's README (PEFT's config has no
  // field for it, and unknown config keys are an error in older PEFT).
  std::string base_dtype = "f32";
  for (auto& t : p.stored)
    if (t.defined()) {
      base_dtype = dtype_name(t.dtype);
      break;
    }
  for (auto& ch : base_dtype) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  SafetensorsWriter w(dir, plan, 0, {{"format", "pt"}, {"lamina_base_dtype", base_dtype}},
                      "adapter_model");
  for (size_t i : idx)
    w.write(p.specs[i].name, p.params.f32() + p.offset[i], size_t(p.numel(i)) * 4);
  w.finish();
  json cfg = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"base_model_name_or_path", base_model},
              {"r", c.r},
              {"lora_alpha", c.alpha},
              {"lora_dropout", c.dropout},
              {"target_modules", c.targets},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"init_lora_weights", true},
              {"modules_to_save", nullptr},
              {"layers_to_transform", nullptr},
              {"use_rslora", c.rslora},
              {"revision", nullptr}};
  write_file_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
  write_file_atomic(
      dir + "/README.md",
      "---\nlibrary_name: peft\nbase_model: " + base_model +
          "\n---\n\n# LoRA adapter (lamina)\n\n- base model: `" + base_model +
          "`\n- base kept during training as: " + base_dtype +
          (base_dtype == "f32" ? " (full precision)"
                               : " (frozen, never widened to F32; merge into the full-precision "
                                 "base with `lamina merge-lora`)") +
          "\n- rank " + std::to_string(c.r) + ", alpha " + json(c.alpha).dump() +
          ", targets: " + json(c.targets).dump() + "\n");
}

LoraConfig read_lora_config(const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  if (!file_exists(path)) fail(path, ": not found (is '", dir, "' a PEFT LoRA adapter?)");
  json j = read_json_file(path);
  if (j.value("peft_type", "") != "LORA") fail(path, ": peft_type is not LORA");
  if (j.value("fan_in_fan_out", false)) fail(path, ": fan_in_fan_out adapters are not supported");
  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1)
    fail(path, ": r must be a positive integer");
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number())
    fail(path, ": lora_alpha must be a number");
  c.r = j["r"].get<int64_t>();
  c.alpha = j["lora_alpha"].get<double>();
  c.dropout = j.value("lora_dropout", 0.0);
  if (auto rs = j.find("use_rslora"); rs != j.end() && !rs->is_null()) {
    if (!rs->is_boolean()) fail(path, ": use_rslora must be true or false");
    c.rslora = rs->get<bool>();
  }
  // Per-module ranks and alphas change the shapes and scales of single modules: not implemented
  // yet, so refused by name rather than merged with the global r and alpha.
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (auto pt = j.find(k); pt != j.end() && !pt->is_null() && !(pt->is_object() && pt->empty()))
      fail(path, ": ", k, " is not supported yet (every module must use r and lora_alpha)");
  auto tm = j.at("target_modules");
  c.targets = tm.is_string() ? parse_lora_targets(tm.get<std::string>())
                             : tm.get<std::vector<std::string>>();
  return c;
}

void merge_lora(const std::string& base_dir, const std::string& adapter_dir,
                const std::string& out_path, bool force, std::optional<DType> dtype) {
  ModelConfig cfg = ModelConfig::load(base_dir);
  Checkpoint base(base_dir);
  LoraConfig lc = read_lora_config(adapter_dir);
  SafetensorsFile ad(adapter_dir + "/adapter_model.safetensors");
  const double scale = lc.scale();
  auto specs = model_tensor_specs(cfg, detect_moe_layout(cfg, base));
  // Every adapter tensor must be used: a name that matches nothing means a different base.
  size_t used = 0;
  OutputDir out(out_path, force);
  std::vector<SafetensorsWriter::Planned> plan;
  for (auto& sp : specs)
    plan.push_back({sp.name, dtype.value_or(base.info(sp.name).dtype), sp.shape});
  SafetensorsWriter w(out.path(), plan, 5000000000ull);
  std::vector<float> f, buf32;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& sp = specs[i];
    Tensor t = base.get(sp.name);
    const size_t n = size_t(t.numel());
    f.resize(n);
    convert_to_f32(t.data, t.dtype, f.data(), n);
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
      for (int tg = 0; tg < kLoraTargets; ++tg) {
        if (base_name(l, tg) != sp.name) continue;
        const TensorInfo* ia = ad.find(peft_lora_name(l, tg, false));
        const TensorInfo* ib = ad.find(peft_lora_name(l, tg, true));
        if (!ia && !ib) continue;
        if (!ia || !ib)
          fail(adapter_dir, "/adapter_model.safetensors: only one of lora_A/lora_B for ", sp.name);
        const int64_t out_d = sp.shape[0], in_d = sp.shape[1];
        if (ia->shape != Shape{lc.r, in_d} || ib->shape != Shape{out_d, lc.r})
          fail(adapter_dir, "/adapter_model.safetensors: adapter for ", sp.name, " has shapes ",
               shape_str(ia->shape), " and ", shape_str(ib->shape), ", expected [", lc.r, ", ",
               in_d, "] and [", out_d, ", ", lc.r, "]");
        Tensor A = ad.tensor(*ia).to(DType::F32), B = ad.tensor(*ib).to(DType::F32);
        // W += scale * B[out, r] · A[r, in]
        for (int64_t o = 0; o < out_d; ++o)
          for (int64_t k = 0; k < lc.r; ++k) {
            const float bk = float(scale) * B.f32()[o * lc.r + k];
            const float* ar = A.f32() + k * in_d;
            float* wr = f.data() + o * in_d;
            for (int64_t c = 0; c < in_d; ++c) wr[c] += bk * ar[c];
          }
        used += 2;
      }
    const DType od = plan[i].dtype;
    bytes.resize(n * dtype_size(od));
    convert_from_f32(f.data(), bytes.data(), od, n);
    w.write(sp.name, bytes.data(), bytes.size());
  }
  if (used != ad.header().tensors.size())
    fail(adapter_dir, "/adapter_model.safetensors: ", ad.header().tensors.size() - used,
         " adapter tensors match no projection of ", base_dir, " (a different base model?)");
  w.finish();
  copy_tokenizer_files(base_dir, out.path());
  if (dtype) cfg.torch_dtype = *dtype;
  cfg.save(out.path() + "/config.json");
  out.commit();
}

}  // namespace lamina
