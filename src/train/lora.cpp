#include "train/lora.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"
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
  if (list == "all") return {"all"};  // resolved per model by add_lora
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string n; std::getline(ss, n, ',');) {
    if (n.empty()) continue;
    const bool expert = n == "w1" || n == "w2" || n == "w3";
    if (!expert && n.find("_proj") == std::string::npos) n += "_proj";
    if (!expert && target_index(n) < 0)
      fail("--lora-targets: unknown module '", n,
           "' (q, k, v, o, gate, up, down; Mixtral's experts w1, w2, w3; or all)");
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

std::string peft_expert_lora_name(int64_t layer, int64_t expert, int t, bool is_b) {
  return "base_model.model.model.layers." + std::to_string(layer) + ".block_sparse_moe.experts." +
         std::to_string(expert) + "." + expert_lora_module_name(t) +
         (is_b ? ".lora_B.weight" : ".lora_A.weight");
}

std::string lora_module_path(int64_t layer, int t) {
  std::string b = base_name(layer, t);
  return b.substr(0, b.size() - 7);  // less ".weight"
}

std::string expert_lora_module_path(int64_t layer, int64_t expert, int t) {
  return "model.layers." + std::to_string(layer) + ".block_sparse_moe.experts." +
         std::to_string(expert) + "." + expert_lora_module_name(t);
}

int pattern_key(const std::vector<std::string>& keys, const std::string& module) {
  for (size_t i = 0; i < keys.size(); ++i)
    // regex_match anchors both ends, as re.match(...) with the trailing "$".
    if (std::regex_match(module, std::regex("(.*\\.)?(" + keys[i] + ")"))) return int(i);
  return -1;
}

namespace {
template <class V>
std::vector<std::string> keys_of(const std::vector<std::pair<std::string, V>>& pattern) {
  std::vector<std::string> k;
  for (auto& [key, v] : pattern) k.push_back(key);
  return k;
}
}  // namespace

int64_t LoraConfig::rank_of(const std::string& module) const {
  const int i = pattern_key(keys_of(rank_pattern), module);
  return i < 0 ? r : rank_pattern[size_t(i)].second;
}

double LoraConfig::alpha_of(const std::string& module) const {
  const int i = pattern_key(keys_of(alpha_pattern), module);
  return i < 0 ? alpha : alpha_pattern[size_t(i)].second;
}

void check_lora_patterns(const LoraConfig& c, const std::string& where) {
  auto check_key = [&](const std::string& key, const char* what) {
    try {
      std::regex re("(.*\\.)?(" + key + ")");
    } catch (const std::regex_error& e) {
      fail(where, ": ", what, " key '", key, "' is not a regular expression (", e.what(), ")");
    }
  };
  for (auto& [k, v] : c.rank_pattern) {
    check_key(k, "rank_pattern");
    if (v < 1) fail(where, ": rank_pattern '", k, "': the rank must be a positive integer");
  }
  for (auto& [k, v] : c.alpha_pattern) {
    check_key(k, "alpha_pattern");
    if (!(v > 0) || !std::isfinite(v))
      fail(where, ": alpha_pattern '", k, "': alpha must be a positive number");
  }
}

std::pair<std::string, double> parse_lora_pattern(const std::string& spec,
                                                  const std::string& option) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    fail(option, " '", spec, "': expected PATTERN=VALUE, e.g. 'q_proj=16' or 'layers\\.0\\..*=4'");
  const std::string v = spec.substr(eq + 1);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (end == v.c_str() || *end != '\0' || !std::isfinite(x) || x <= 0)
    fail(option, " '", spec, "': '", v, "' is not a positive number");
  return {spec.substr(0, eq), x};
}

std::vector<std::string> resolve_lora_targets(const ModelConfig& cfg,
                                              const std::vector<std::string>& targets) {
  std::vector<std::string> out;
  for (auto& n : targets) {
    if (n == "all") {
      for (int t = 0; t <= kLoraO; ++t) out.push_back(lora_module_name(t));
      if (cfg.is_moe())  // the router (block_sparse_moe.gate) stays frozen
        for (int t = 0; t < kExpertLoraTargets; ++t) out.push_back(expert_lora_module_name(t));
      else
        for (int t = kLoraGate; t < kLoraTargets; ++t) out.push_back(lora_module_name(t));
      continue;
    }
    const bool expert = n == "w1" || n == "w2" || n == "w3";
    if (expert && !cfg.is_moe())
      fail("LoRA target '", n, "' is a Mixtral expert projection; this ", arch_name(cfg.arch),
           " model's MLP is gate_proj, up_proj, down_proj");
    if (!expert && target_index(n) < 0) fail("LoRA: unknown target module '", n, "'");
    if (!expert && cfg.is_moe() && !is_attention(target_index(n)))
      fail("LoRA target '", n, "': Mixtral's MLP is its experts; adapt them as w1 (gate), ",
           "w2 (down) and w3 (up), PEFT's names");
    if (cfg.is_moe() && expert && cfg.num_local_experts * kExpertLoraTargets + kLoraTargets > 255)
      fail("LoRA on the experts supports up to 82 experts, not ", cfg.num_local_experts);
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  }
  return out;
}

void add_lora(ParamStore& p, const LoraConfig& c) {
  if (c.r < 1) fail("--lora-r must be positive");
  std::vector<TensorSpec> extra;
  p.lora_targets = resolve_lora_targets(p.cfg, c.targets);
  std::vector<int> which, expert_which;
  for (auto& name : p.lora_targets) {
    const int t = target_index(name);
    if (t >= 0)
      which.push_back(t);
    else
      expert_which.push_back(name == "w1" ? kLoraW1 : name == "w2" ? kLoraW2 : kLoraW3);
  }
  if (!expert_which.empty() && p.layout == MoeLayout::Fused)
    fail(
        "LoRA on the experts needs the per-expert layout (block_sparse_moe.experts.E.w1); this "
        "checkpoint fuses them (mlp.experts.gate_up_proj): adapt q, k, v, o only");
  const int64_t H = p.cfg.hidden_size, I = p.cfg.intermediate_size, E = p.cfg.num_local_experts;
  // Each module's rank and scale: r and alpha unless a pattern names it (PEFT's rule).
  std::vector<bool> key_used(c.rank_pattern.size() + c.alpha_pattern.size(), false);
  std::string first_module;
  auto rank_scale = [&](const std::string& module) {
    if (first_module.empty()) first_module = module;
    const int ri = pattern_key(keys_of(c.rank_pattern), module);
    const int ai = pattern_key(keys_of(c.alpha_pattern), module);
    if (ri >= 0) key_used[size_t(ri)] = true;
    if (ai >= 0) key_used[c.rank_pattern.size() + size_t(ai)] = true;
    return std::pair{c.rank_of(module), float(c.scale_of(module))};
  };
  for (int64_t l = 0; l < p.cfg.num_hidden_layers; ++l) {
    for (int t : which) {
      auto [out, in] = proj_shape(p.cfg, t);
      auto [r, scale] = rank_scale(lora_module_path(l, t));
      extra.push_back({peft_lora_name(l, t, false),
                       {r, in},
                       false,
                       [l, t, scale](ModelWeights& w, const Tensor& x) {
                         w.layers[size_t(l)].lora[t].a = x;
                         w.layers[size_t(l)].lora[t].scale = scale;
                       }});
      extra.push_back(
          {peft_lora_name(l, t, true), {out, r}, false, [l, t](ModelWeights& w, const Tensor& x) {
             w.layers[size_t(l)].lora[t].b = x;
           }});
    }
    // Experts in the checkpoint's order (w1, w2, w3 of expert 0, then expert 1, ...).
    for (int64_t e = 0; e < E && !expert_which.empty(); ++e)
      for (int t = 0; t < kExpertLoraTargets; ++t) {
        if (std::find(expert_which.begin(), expert_which.end(), t) == expert_which.end()) continue;
        const int64_t out = t == kLoraW2 ? H : I, in = t == kLoraW2 ? I : H;
        auto [r, scale] = rank_scale(expert_lora_module_path(l, e, t));
        auto slot = [l, e, t, E](ModelWeights& w) -> LoraPair& {
          auto& v = w.layers[size_t(l)].e_lora[t];
          v.resize(size_t(E));
          return v[size_t(e)];
        };
        extra.push_back({peft_expert_lora_name(l, e, t, false),
                         {r, in},
                         false,
                         [slot, scale](ModelWeights& w, const Tensor& x) {
                           slot(w).a = x;
                           slot(w).scale = scale;
                         }});
        extra.push_back({peft_expert_lora_name(l, e, t, true),
                         {out, r},
                         false,
                         [slot](ModelWeights& w, const Tensor& x) { slot(w).b = x; }});
      }
  }
  // PEFT warns about a key that matches no adapted module and ignores it; a training option
  // that changes nothing is a mistake, so it is an error here.
  for (size_t k = 0; k < key_used.size(); ++k)
    if (!key_used[k]) {
      const bool rank = k < c.rank_pattern.size();
      fail(rank ? "--lora-rank-pattern '" : "--lora-alpha-pattern '",
           rank ? c.rank_pattern[k].first : c.alpha_pattern[k - c.rank_pattern.size()].first,
           "' matches none of the adapted modules (names such as ", first_module, ", targets ",
           json(p.lora_targets).dump(), ")");
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
  std::vector<std::string> names;
  for (size_t i = 0; i < p.specs.size(); ++i) {
    const std::string& n = p.specs[i].name;
    // A vocabulary grown for the template's tokens: the whole embedding and LM head [V', H] go in
    // the adapter under PEFT's names (PEFT 0.21.2's save_embedding_layers="auto" on a resized
    // base), so PEFT over a base resized to V' and merge-lora both get the new rows.
    const bool grown_rows =
        p.base_vocab > 0 && (n == "model.embed_tokens.weight" || n == "lm_head.weight");
    if (n.rfind("base_model.model.", 0) == 0 || grown_rows) {
      names.push_back(grown_rows ? "base_model.model." + n : n);
      plan.push_back({names.back(), DType::F32, p.specs[i].shape});
      idx.push_back(i);
    }
  }
  // The base the adapter was trained over: its storage type when it was kept frozen out of F32
  // (--base-dtype), in the safetensors metadata and the adapter's README (PEFT's config has no
  // field for it, and unknown config keys are an error in older PEFT).
  std::string base_dtype;  // the distinct types, in tensor order ("q4_k,q6_k" for a K_M GGUF)
  for (auto& t : p.stored)
    if (t.defined() &&
        ("," + base_dtype + ",").find(std::string(",") + dtype_name(t.dtype) + ",") ==
            std::string::npos)
      base_dtype += (base_dtype.empty() ? "" : ",") + std::string(dtype_name(t.dtype));
  if (base_dtype.empty()) base_dtype = "f32";
  for (auto& ch : base_dtype) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  SafetensorsWriter w(dir, plan, 0, {{"format", "pt"}, {"lamina_base_dtype", base_dtype}},
                      "adapter_model");
  for (size_t k = 0; k < idx.size(); ++k)
    w.write(names[k], p.params.f32() + p.offset[idx[k]], size_t(p.numel(idx[k])) * 4);
  w.finish();
  // In PEFT's field order; the patterns keep their order (the first matching key wins).
  nlohmann::ordered_json rank_pattern = nlohmann::ordered_json::object(),
                         alpha_pattern = nlohmann::ordered_json::object();
  for (auto& [k, v] : c.rank_pattern) rank_pattern[k] = v;
  for (auto& [k, v] : c.alpha_pattern) alpha_pattern[k] = v;
  nlohmann::ordered_json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", c.r},
      {"lora_alpha", c.alpha},
      {"lora_dropout", c.dropout},
      {"target_modules", p.lora_targets.empty() ? c.targets : p.lora_targets},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
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
          ", targets: " + json(p.lora_targets.empty() ? c.targets : p.lora_targets).dump() + "\n");
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
  // rank_pattern / alpha_pattern, in the file's order (json sorts keys; the first match wins).
  const auto oj = nlohmann::ordered_json::parse(read_text_file(path), nullptr, false);
  for (const char* k : {"rank_pattern", "alpha_pattern"}) {
    auto pt = oj.find(k);
    if (pt == oj.end() || pt->is_null()) continue;
    if (!pt->is_object()) fail(path, ": ", k, " must be an object {module pattern: value}");
    for (auto& [key, v] : pt->items()) {
      const bool rank = k[0] == 'r';
      if (rank ? !v.is_number_integer() : !v.is_number())
        fail(path, ": ", k, " '", key,
             "': ", rank ? "the rank must be an integer" : "alpha must be a number");
      if (rank)
        c.rank_pattern.push_back({key, v.get<int64_t>()});
      else
        c.alpha_pattern.push_back({key, v.get<double>()});
    }
  }
  check_lora_patterns(c, path);
  auto tm = j.at("target_modules");
  c.targets = tm.is_string() ? parse_lora_targets(tm.get<std::string>())
                             : tm.get<std::vector<std::string>>();
  return c;
}

namespace {

// Mixtral expert adapters as PEFT 0.21.2 writes them over transformers v5's fused experts: LoRA on
// the stacked parameters (target_parameters gate_up_proj [E, 2I, H], down_proj [E, H, I]) named
// ...layers.{l}.mlp.experts[.base_layer]*.lora_A.weight [E·r, in] / lora_B.weight [out, r·E];
// expert e's delta [out, in] = scale · B[:, k·E + e] · A[e·r + k, :] (ParamWrapper's
// get_delta_weight). Which parameter a pair adapts is told by its shapes (the nesting depth
// depends on the order PEFT wrapped them in).
struct FusedExpertLora {
  int64_t layer = 0;
  bool gate_up = false;  // else down_proj
  int64_t r = 0, in = 0, out = 0;
  double scale = 0;
  Tensor A, B;  // F32
  // Adds rows [row0, row0 + rows) of expert e's delta into w [rows, in].
  void add_to(int64_t e, int64_t E, int64_t row0, int64_t rows, float* w) const {
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t k = 0; k < r; ++k) {
        const float bk = float(scale) * B.f32()[(row0 + o) * r * E + k * E + e];
        const float* ar = A.f32() + (e * r + k) * in;
        float* wr = w + o * in;
        for (int64_t c = 0; c < in; ++c) wr[c] += bk * ar[c];
      }
  }
};

std::vector<FusedExpertLora> fused_expert_loras(const SafetensorsFile& ad, const ModelConfig& cfg,
                                                const LoraConfig& lc, const std::string& where,
                                                size_t& used) {
  std::vector<FusedExpertLora> out;
  if (!cfg.is_moe()) return out;
  static const std::regex name(
      R"(base_model\.model\.model\.layers\.(\d+)\.mlp\.experts\.((?:base_layer\.)*)lora_A\.weight)");
  const int64_t E = cfg.num_local_experts, H = cfg.hidden_size, I = cfg.intermediate_size;
  for (auto& ti : ad.header().tensors) {
    std::smatch m;
    if (!std::regex_match(ti.name, m, name)) continue;
    const std::string bname = ti.name.substr(0, ti.name.size() - 13) + "lora_B.weight";
    const TensorInfo* ib = ad.find(bname);
    if (!ib) fail(where, ": ", ti.name, " has no ", bname);
    FusedExpertLora f;
    f.layer = std::stoll(m[1].str());
    if (ti.shape.size() != 2 || ib->shape.size() != 2 || ti.shape[0] % E != 0 ||
        ib->shape[1] != ti.shape[0])
      fail(where, ": ", ti.name, " ", shape_str(ti.shape), " and lora_B ", shape_str(ib->shape),
           " are not a LoRA pair over ", E, " stacked experts");
    f.r = ti.shape[0] / E, f.in = ti.shape[1], f.out = ib->shape[0];
    if (f.in == H && f.out == 2 * I)
      f.gate_up = true;
    else if (!(f.in == I && f.out == H))
      fail(where, ": ", ti.name, " ", shape_str(ti.shape), " and lora_B ", shape_str(ib->shape),
           " fit neither experts.gate_up_proj [", E, ", ", 2 * I, ", ", H, "] nor down_proj [", E,
           ", ", H, ", ", I, "]");
    if (f.layer >= cfg.num_hidden_layers) fail(where, ": ", ti.name, ": no layer ", f.layer);
    const std::string module = "model.layers." + std::to_string(f.layer) + ".mlp.experts." +
                               (f.gate_up ? "gate_up_proj" : "down_proj");
    if (lc.rank_of(module) != f.r)
      fail(where, ": ", ti.name, " has rank ", f.r, " per expert, but r and rank_pattern give ",
           module, " rank ", lc.rank_of(module));
    f.scale = lc.scale_of(module);
    f.A = ad.tensor(ti).to(DType::F32);
    f.B = ad.tensor(*ib).to(DType::F32);
    used += 2;
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace

void merge_lora(const std::string& base_dir, const std::string& adapter_dir,
                const std::string& out_path, bool force, std::optional<DType> dtype) {
  ModelConfig cfg = ModelConfig::load(base_dir);
  Checkpoint base(base_dir);
  LoraConfig lc = read_lora_config(adapter_dir);
  SafetensorsFile ad(adapter_dir + "/adapter_model.safetensors");
  // Whole tensors the adapter replaces (PEFT's saved embedding layers of a resized base:
  // base_model.model.model.embed_tokens.weight [V', H], base_model.model.lm_head.weight).
  auto replacement = [&](const std::string& name) { return ad.find("base_model.model." + name); };
  const TensorInfo* emb = replacement("model.embed_tokens.weight");
  const ModelConfig base_cfg = cfg;
  if (emb) {
    if (emb->shape.size() != 2 || emb->shape[1] != cfg.hidden_size || emb->shape[0] < 1)
      fail(adapter_dir,
           "/adapter_model.safetensors: base_model.model.model.embed_tokens.weight has "
           "shape ",
           shape_str(emb->shape), ", expected [V, ", cfg.hidden_size, "]");
    cfg.vocab_size = emb->shape[0];
  }
  // The tokenizer the merged model gets: the adapter's when it has one (lamina and TRL save it
  // next to the adapter, with any added token and the chat template), else the base's.
  const bool own_tokenizer = file_exists(adapter_dir + "/tokenizer_config.json") ||
                             file_exists(adapter_dir + "/tokenizer.json") ||
                             file_exists(adapter_dir + "/tokenizer.model");
  const std::string tok_from = own_tokenizer ? adapter_dir : base_dir;
  if (own_tokenizer) {
    const int64_t n = Tokenizer::load(adapter_dir).size();
    if (n > cfg.vocab_size)
      fail(adapter_dir, ": its tokenizer has ", n, " tokens but the merged model would have ",
           cfg.vocab_size,
           " embedding rows (the adapter lacks the resized "
           "base_model.model.model.embed_tokens.weight and lm_head.weight; retrain it with this "
           "lamina, which saves them)");
  }
  auto specs = model_tensor_specs(cfg, detect_moe_layout(base_cfg, base));
  // Every adapter tensor must be used: a name that matches nothing means a different base.
  size_t used = 0;
  OutputDir out(out_path, force);
  std::vector<SafetensorsWriter::Planned> plan;
  for (auto& sp : specs)
    plan.push_back({sp.name, dtype.value_or(base.info(sp.name).dtype), sp.shape});  // base's names
  SafetensorsWriter w(out.path(), plan, 5000000000ull);
  const auto fused =
      fused_expert_loras(ad, cfg, lc, adapter_dir + "/adapter_model.safetensors", used);
  std::vector<float> f, buf32;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& sp = specs[i];
    const TensorInfo* rep = replacement(sp.name);
    if (rep && rep->shape != sp.shape)
      fail(adapter_dir, "/adapter_model.safetensors: base_model.model.", sp.name, " has shape ",
           shape_str(rep->shape), ", expected ", shape_str(sp.shape));
    Tensor t = rep ? ad.tensor(*rep) : base.get(sp.name);
    used += rep ? 1 : 0;
    const size_t n = size_t(t.numel());
    f.resize(n);
    convert_to_f32(t.data, t.dtype, f.data(), n);
    // PEFT names an adapter after the module it adapts: X.weight <- base_model.model.X.lora_A/B.
    const std::string suffix = ".weight";
    if (sp.shape.size() == 2 && sp.name.size() > suffix.size() &&
        sp.name.compare(sp.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const std::string stem =
          "base_model.model." + sp.name.substr(0, sp.name.size() - suffix.size());
      const TensorInfo* ia = ad.find(stem + ".lora_A.weight");
      const TensorInfo* ib = ad.find(stem + ".lora_B.weight");
      if (ia || ib) {
        if (!ia || !ib)
          fail(adapter_dir, "/adapter_model.safetensors: only one of lora_A/lora_B for ", sp.name);
        // This module's rank and scale: r and lora_alpha unless a pattern names it.
        const std::string module = sp.name.substr(0, sp.name.size() - suffix.size());
        const int64_t out_d = sp.shape[0], in_d = sp.shape[1], r = lc.rank_of(module);
        const double scale = lc.scale_of(module);
        if (ia->shape != Shape{r, in_d} || ib->shape != Shape{out_d, r})
          fail(adapter_dir, "/adapter_model.safetensors: adapter for ", sp.name, " has shapes ",
               shape_str(ia->shape), " and ", shape_str(ib->shape), ", expected [", r, ", ", in_d,
               "] and [", out_d, ", ", r, "] (its rank by r and rank_pattern)");
        Tensor A = ad.tensor(*ia).to(DType::F32), B = ad.tensor(*ib).to(DType::F32);
        // W += scale * B[out, r] · A[r, in]
        for (int64_t o = 0; o < out_d; ++o)
          for (int64_t k = 0; k < r; ++k) {
            const float bk = float(scale) * B.f32()[o * r + k];
            const float* ar = A.f32() + k * in_d;
            float* wr = f.data() + o * in_d;
            for (int64_t c = 0; c < in_d; ++c) wr[c] += bk * ar[c];
          }
        used += 2;
      }
    }
    // PEFT's fused-expert adapters onto this checkpoint's experts, split (w1 = gate rows [0, I)
    // of gate_up_proj, w3 = rows [I, 2I), w2 = down_proj) or fused ([E, 2I, H], [E, H, I]).
    for (const auto& fe : fused) {
      const std::string p = "model.layers." + std::to_string(fe.layer) + ".";
      const int64_t E = cfg.num_local_experts, I = cfg.intermediate_size;
      if (sp.name == p + (fe.gate_up ? "mlp.experts.gate_up_proj" : "mlp.experts.down_proj")) {
        for (int64_t e = 0; e < E; ++e)
          fe.add_to(e, E, 0, fe.out, f.data() + size_t(e * fe.out * fe.in));
        continue;
      }
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        if (fe.gate_up && sp.name == x + "w1.weight") fe.add_to(e, E, 0, I, f.data());
        if (fe.gate_up && sp.name == x + "w3.weight") fe.add_to(e, E, I, I, f.data());
        if (!fe.gate_up && sp.name == x + "w2.weight") fe.add_to(e, E, 0, fe.out, f.data());
      }
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
  if (own_tokenizer) copy_tokenizer_files(adapter_dir, out.path());  // over the base's files
  if (dtype) cfg.torch_dtype = *dtype;
  cfg.save(out.path() + "/config.json");
  out.commit();
}

}  // namespace lamina
