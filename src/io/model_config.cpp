#include "io/model_config.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"

namespace lamina {
using json = nlohmann::json;

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama:
      return "llama";
    case Arch::Mistral:
      return "mistral";
    case Arch::Mixtral:
      return "mixtral";
    case Arch::Qwen2:
      return "qwen2";
    case Arch::Qwen3:
      return "qwen3";
    case Arch::Gemma2:
      return "gemma2";
    case Arch::Gemma3:
      return "gemma3_text";
  }
  return "?";
}

namespace {

int64_t get_int(const json& j, const std::string& where, const char* key,
                std::optional<int64_t> dflt = {}) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (dflt) return *dflt;
    fail(where, ": missing field '", key, "'");
  }
  if (!it->is_number_integer()) fail(where, ": field '", key, "' must be an integer");
  int64_t v = it->get<int64_t>();
  if (v < 0) fail(where, ": field '", key, "' must not be negative");
  return v;
}

double get_num(const json& j, const std::string& where, const char* key, double dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number()) fail(where, ": field '", key, "' must be a number");
  return it->get<double>();
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": not a JSON object");
  ModelConfig c;
  c.raw = j;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) fail(where, ": missing field 'model_type'");
  std::string t = mt->get<std::string>();
  if (t == "llama")
    c.arch = Arch::Llama;
  else if (t == "mistral")
    c.arch = Arch::Mistral;
  else if (t == "mixtral")
    c.arch = Arch::Mixtral;
  else if (t == "qwen2")
    c.arch = Arch::Qwen2;
  else if (t == "qwen3")
    c.arch = Arch::Qwen3;
  else if (t == "gemma2")
    c.arch = Arch::Gemma2;
  else if (t == "gemma3_text")
    c.arch = Arch::Gemma3;
  else if (t == "gemma3")
    fail(where,
         ": model_type 'gemma3' is the multimodal Gemma 3; lamina runs its text model "
         "(model_type gemma3_text, Gemma3ForCausalLM: gemma-3-1b and the text_config of the "
         "others)");
  else
    fail(where, ": unsupported model_type '", t,
         "' (supported: llama, mistral, mixtral, qwen2, qwen3, gemma2, gemma3_text)");
  const bool gemma = c.arch == Arch::Gemma2 || c.arch == Arch::Gemma3;
  const bool gemma3 = c.arch == Arch::Gemma3;
  c.hidden_size = get_int(j, where, "hidden_size");
  c.intermediate_size = get_int(j, where, "intermediate_size");
  c.num_hidden_layers = get_int(j, where, "num_hidden_layers");
  c.num_attention_heads = get_int(j, where, "num_attention_heads");
  c.num_key_value_heads = get_int(j, where, "num_key_value_heads", c.num_attention_heads);
  c.vocab_size = get_int(j, where, "vocab_size");
  if (c.hidden_size == 0 || c.num_attention_heads == 0 || c.vocab_size == 0 ||
      c.num_key_value_heads == 0)
    fail(where,
         ": hidden_size, num_attention_heads, num_key_value_heads and vocab_size must be positive");
  if (c.num_hidden_layers == 0 || c.intermediate_size == 0)
    fail(where, ": num_hidden_layers and intermediate_size must be positive");
  // Beyond every released model by far: such a value is a typo, and would only reach the
  // allocator (or overflow a size computation) later. The field is named here instead.
  auto cap = [&](const char* key, int64_t v, int64_t most) {
    if (v > most)
      fail(where, ": field '", key, "' is ", v, ", beyond any supported model (at most ", most,
           ")");
  };
  cap("hidden_size", c.hidden_size, 1 << 16);
  cap("intermediate_size", c.intermediate_size, 1 << 20);
  cap("num_hidden_layers", c.num_hidden_layers, 1 << 10);
  cap("num_attention_heads", c.num_attention_heads, 1 << 10);
  cap("num_key_value_heads", c.num_key_value_heads, 1 << 10);
  cap("vocab_size", c.vocab_size, 1 << 22);
  auto act = j.find(gemma ? "hidden_activation" : "hidden_act");
  if (gemma) {  // Gemma3TextConfig's hidden_activation, gelu_pytorch_tanh by default
    const std::string a = act == j.end() || act->is_null() ? "gelu_pytorch_tanh"
                          : act->is_string()               ? act->get<std::string>()
                                                           : "";
    if (a != "gelu_pytorch_tanh")
      fail(where, ": hidden_activation '", a,
           "' is not supported (Gemma's MLP here is GeGLU: gelu_pytorch_tanh)");
    c.hidden_act = Activation::GeluTanh;
  } else if (act != j.end() && !act->is_null()) {
    if (!act->is_string()) fail(where, ": field 'hidden_act' must be a string");
    const std::string a = act->get<std::string>();
    if (a != "silu" && a != "swish")
      fail(where, ": hidden_act '", a, "' is not supported (lamina's MLP is SwiGLU: silu)");
  }
  // Qwen3Config's head_dim defaults to 128; the others derive it from the hidden size.
  c.head_dim = get_int(j, where, "head_dim",
                       c.arch == Arch::Qwen3 ? 128
                       : gemma               ? 256
                                             : c.hidden_size / c.num_attention_heads);
  if (c.head_dim == 0 || c.head_dim % 2) fail(where, ": head_dim must be positive and even");
  if (c.num_attention_heads % c.num_key_value_heads)
    fail(where, ": num_attention_heads (", c.num_attention_heads,
         ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")");
  cap("head_dim", c.head_dim, 1 << 12);
  c.max_position_embeddings = get_int(j, where, "max_position_embeddings",
                                      gemma3  ? 131072
                                      : gemma ? 8192
                                              : 4096);
  if (c.max_position_embeddings == 0)
    fail(where, ": field 'max_position_embeddings' must be positive");
  cap("max_position_embeddings", c.max_position_embeddings, int64_t(1) << 28);
  c.rms_norm_eps = get_num(j, where, "rms_norm_eps", 1e-6);
  // RoPE: rope_theta and rope_scaling (the Hub's configs), or transformers v5's rope_parameters
  // (rope_theta and the scaling in one object).
  const json* rp = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(where, ": field 'rope_parameters' must be an object");
    rp = &*it;
  }
  const double default_theta = gemma3 ? 1e6 : 10000.0;
  if (gemma3) {
    // transformers v5 writes Gemma 3's rope_parameters per layer type: the full-attention layers'
    // (scaled) RoPE, and the sliding layers' plain one with its own base.
    double local = get_num(j, where, "rope_local_base_freq", 10000.0);
    if (rp && rp->contains("full_attention")) {
      const json& sl = rp->value("sliding_attention", json::object());
      if (sl.value("rope_type", std::string("default")) != "default")
        fail(where, ": rope_parameters.sliding_attention.rope_type must be default");
      local = get_num(sl, where, "rope_theta", local);
      rp = &(*rp)["full_attention"];
      if (!rp->is_object()) fail(where, ": rope_parameters.full_attention must be an object");
    }
    if (!(local > 0) || !std::isfinite(local))
      fail(where, ": field 'rope_local_base_freq' must be a finite number > 0");
    c.rope_local_theta = local;
  }
  c.rope_theta = get_num(j, where, "rope_theta",
                         rp ? get_num(*rp, where, "rope_theta", default_theta) : default_theta);
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    fail(where, ": field 'rms_norm_eps' must be a finite number > 0");
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    fail(where, ": field 'rope_theta' must be a finite number > 0");
  const json* rs = rp;
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(where, ": field 'rope_scaling' must be an object");
    rs = &*it;
  }
  if (rs) {
    const std::string field = rs == rp ? "rope_parameters" : "rope_scaling";
    auto type = rs->find("rope_type");
    if (type == rs->end()) type = rs->find("type");  // the older key
    if (type != rs->end() && !type->is_string())
      fail(where, ": ", field, ".rope_type must be a string");
    const std::string t = type == rs->end() ? "default" : type->get<std::string>();
    auto positive = [&](const char* key) {
      auto it = rs->find(key);
      if (it == rs->end() || !it->is_number())
        fail(where, ": ", field, ".", key, " is missing or not a number (rope_type ", t, ")");
      const double v = it->get<double>();
      if (!(v > 0) || !std::isfinite(v)) fail(where, ": ", field, ".", key, " must be > 0");
      return v;
    };
    if (t == "linear" || t == "llama3") {
      c.rope_scaling.type = t;
      c.rope_scaling.factor = positive("factor");
      if (t == "llama3") {
        c.rope_scaling.low_freq_factor = positive("low_freq_factor");
        c.rope_scaling.high_freq_factor = positive("high_freq_factor");
        c.rope_scaling.original_max_position_embeddings =
            int64_t(positive("original_max_position_embeddings"));
        if (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
          fail(where, ": ", field, ": high_freq_factor must exceed low_freq_factor");
      }
    } else if (t == "yarn") {
      // transformers' _compute_yarn_parameters and standardize_rope_params: the original
      // context from rope_scaling, else the config's top level, else max_position_embeddings.
      RopeScaling& y = c.rope_scaling;
      y.type = t;
      y.original_max_position_embeddings =
          rs->contains("original_max_position_embeddings")
              ? int64_t(positive("original_max_position_embeddings"))
              : get_int(j, where, "original_max_position_embeddings", c.max_position_embeddings);
      if (y.original_max_position_embeddings == 0)
        fail(where, ": original_max_position_embeddings must be positive");
      y.factor =
          rs->contains("factor") && !(*rs)["factor"].is_null()
              ? positive("factor")
              : double(c.max_position_embeddings) / double(y.original_max_position_embeddings);
      auto optional = [&](const char* key) -> double {  // absent, null or 0: unset (Python's `or`)
        auto it = rs->find(key);
        if (it == rs->end() || it->is_null()) return 0;
        if (!it->is_number()) fail(where, ": ", field, ".", key, " must be a number");
        return it->get<double>();
      };
      auto mscale_of = [](double scale, double m) {
        return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
      };
      const double af = optional("attention_factor"), ms = optional("mscale"),
                   msa = optional("mscale_all_dim");
      y.attention_factor =
          rs->contains("attention_factor") && !(*rs)["attention_factor"].is_null() ? af
          : ms != 0 && msa != 0 ? mscale_of(y.factor, ms) / mscale_of(y.factor, msa)
                                : mscale_of(y.factor, 1.0);
      if (optional("beta_fast") != 0) y.beta_fast = optional("beta_fast");
      if (optional("beta_slow") != 0) y.beta_slow = optional("beta_slow");
      if (auto tr = rs->find("truncate"); tr != rs->end() && !tr->is_null()) {
        if (!tr->is_boolean()) fail(where, ": ", field, ".truncate must be true or false");
        y.truncate = tr->get<bool>();
      }
    } else if (t != "default") {
      fail(where, ": ", field, ".rope_type '", t,
           "' is not supported (supported: default, linear, llama3, yarn)");
    }
  }
  auto flag = [&](const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return false;
    if (!it->is_boolean()) fail(where, ": field '", key, "' must be true or false");
    return it->get<bool>();
  };
  // transformers: LlamaAttention and Qwen3Attention put attention_bias on q, k, v and o;
  // Qwen2Attention has q, k, v biases always and none on o.
  if (flag("attention_bias")) {
    if (c.arch != Arch::Llama && c.arch != Arch::Qwen3 && !gemma)
      fail(where, ": field 'attention_bias' is true: a ", arch_name(c.arch),
           " model has no attention biases in transformers");
    c.qkv_bias = c.o_bias = true;
  }
  if (c.arch == Arch::Qwen2) c.qkv_bias = true;
  c.qk_norm = c.arch == Arch::Qwen3 || gemma3;
  if (flag("mlp_bias"))
    fail(where, ": field 'mlp_bias' is true: biases on the MLP projections are not supported yet");
  const bool qwen = c.arch == Arch::Qwen2 || c.arch == Arch::Qwen3;
  if (qwen && flag("use_sliding_window"))
    fail(where,
         ": field 'use_sliding_window' is true: Qwen's per-layer sliding window "
         "(max_window_layers) is not supported yet");
  if ((c.arch == Arch::Mistral || c.arch == Arch::Mixtral) && j.contains("sliding_window") &&
      !j["sliding_window"].is_null()) {
    c.sliding_window = get_int(j, where, "sliding_window");
    if (*c.sliding_window == 0) fail(where, ": field 'sliding_window' must be positive or null");
  }
  if (gemma) {
    c.norm_plus_one = c.sandwich_norms = true;
    c.tie_word_embeddings = true;  // Gemma2Config and Gemma3TextConfig default
    c.embed_scale = double(float(std::sqrt(double(c.hidden_size))));  // F32, as transformers
    const double qpas = get_num(j, where, "query_pre_attn_scalar", 256.0);
    if (!(qpas > 0) || !std::isfinite(qpas))
      fail(where, ": field 'query_pre_attn_scalar' must be a finite number > 0");
    c.attn_scale = 1.0 / std::sqrt(qpas);
    // Gemma2Config caps at 50 (scores) and 30 (logits) unless told null; Gemma 3 does not cap.
    auto cap_of = [&](const char* key, double dflt) {
      auto it = j.find(key);
      if (it == j.end()) return dflt;
      if (it->is_null()) return 0.0;
      const double v = get_num(j, where, key, 0.0);
      if (!(v > 0) || !std::isfinite(v))
        fail(where, ": field '", key, "' must be a finite number > 0 or null");
      return v;
    };
    c.attn_softcap = cap_of("attn_logit_softcapping", gemma3 ? 0.0 : 50.0);
    c.final_softcap = cap_of("final_logit_softcapping", gemma3 ? 0.0 : 30.0);
    if (flag("use_bidirectional_attention"))
      fail(where, ": field 'use_bidirectional_attention' is true: lamina runs causal models");
    c.sliding_window = get_int(j, where, "sliding_window", 4096);
    if (*c.sliding_window == 0) fail(where, ": field 'sliding_window' must be positive");
    // layer_types, or the older sliding_window_pattern: every n-th layer is full attention.
    if (auto lt = j.find("layer_types"); lt != j.end() && !lt->is_null()) {
      if (!lt->is_array() || int64_t(lt->size()) != c.num_hidden_layers)
        fail(where, ": field 'layer_types' must list one type per layer (", c.num_hidden_layers,
             ")");
      for (auto& t : *lt) {
        const std::string s = t.is_string() ? t.get<std::string>() : "";
        if (s != "sliding_attention" && s != "full_attention")
          fail(where, ": field 'layer_types' holds '", t.dump(),
               "' (sliding_attention or full_attention)");
        c.sliding_layers.push_back(s == "sliding_attention");
      }
    } else {
      // Gemma 3's older sliding_window_pattern (6 by default); Gemma 2 alternates.
      const int64_t n = gemma3 ? get_int(j, where, "sliding_window_pattern", 6) : 2;
      if (n == 0) fail(where, ": field 'sliding_window_pattern' must be positive");
      for (int64_t l = 0; l < c.num_hidden_layers; ++l)
        c.sliding_layers.push_back((l + 1) % n != 0);
    }
  }
  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_null()) {
    if (!tie->is_boolean()) fail(where, ": field 'tie_word_embeddings' must be true or false");
    c.tie_word_embeddings = tie->get<bool>();
  }
  if (c.arch == Arch::Mixtral) {
    c.num_local_experts = get_int(j, where, "num_local_experts");
    c.num_experts_per_tok = get_int(j, where, "num_experts_per_tok");
    cap("num_local_experts", c.num_local_experts, 1 << 12);
    if (c.num_experts_per_tok == 0 || c.num_experts_per_tok > c.num_local_experts)
      fail(where, ": num_experts_per_tok must be in [1, num_local_experts]");
    c.router_aux_loss_coef = get_num(j, where, "router_aux_loss_coef", 0.001);
  }
  c.bos_token_id = get_int(j, where, "bos_token_id", gemma ? 2 : 1);
  if (auto pt = j.find("pad_token_id"); pt != j.end() ? !pt->is_null() : gemma) {
    c.pad_token_id = get_int(j, where, "pad_token_id", 0);
    if (*c.pad_token_id >= c.vocab_size) c.pad_token_id.reset();  // no such row: nothing to skip
  }
  auto eos = j.find("eos_token_id");
  if (eos != j.end() && eos->is_array()) {
    c.eos_token_ids.clear();
    for (auto& e : *eos) {
      if (!e.is_number_integer()) fail(where, ": field 'eos_token_id' must hold integers");
      c.eos_token_ids.push_back(e.get<int64_t>());
    }
  } else {
    c.eos_token_ids = {get_int(j, where, "eos_token_id", gemma ? 1 : 2)};
  }
  auto td = j.find("torch_dtype");
  if (td != j.end() && td->is_string())
    c.torch_dtype = parse_dtype(td->get<std::string>(), where + ": torch_dtype");
  return c;
}

ModelConfig ModelConfig::load(const std::string& model_dir) {
  std::string path = model_dir + "/config.json";
  if (!file_exists(path))
    fail(path, ": not found (is '", model_dir, "' a Hugging Face model directory?)");
  return from_json(read_json_file(path), path);
}

json ModelConfig::to_json() const {
  json j = raw;
  j["model_type"] = arch_name(arch);
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (raw.contains("head_dim") || head_dim != hidden_size / num_attention_heads)
    j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (arch == Arch::Mistral || arch == Arch::Mixtral)
    j["sliding_window"] = sliding_window ? json(*sliding_window) : json(nullptr);
  const bool gemma = arch == Arch::Gemma2 || arch == Arch::Gemma3;
  if (arch == Arch::Llama || arch == Arch::Qwen3 || gemma) j["attention_bias"] = o_bias;
  if (gemma) j["sliding_window"] = sliding_window.value_or(4096);
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (arch == Arch::Mixtral) {
    j["num_local_experts"] = num_local_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
  }
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_ids.size() == 1 ? json(eos_token_ids[0]) : json(eos_token_ids);
  j["torch_dtype"] = torch_dtype_name(torch_dtype);
  if (!j.contains("architectures")) {
    const char* a = arch == Arch::Llama     ? "LlamaForCausalLM"
                    : arch == Arch::Mistral ? "MistralForCausalLM"
                    : arch == Arch::Mixtral ? "MixtralForCausalLM"
                    : arch == Arch::Qwen2   ? "Qwen2ForCausalLM"
                    : arch == Arch::Qwen3   ? "Qwen3ForCausalLM"
                    : arch == Arch::Gemma2  ? "Gemma2ForCausalLM"
                                            : "Gemma3ForCausalLM";
    j["architectures"] = {a};
  }
  if (!gemma && !j.contains("hidden_act")) j["hidden_act"] = "silu";
  return j;
}

void ModelConfig::save(const std::string& path) const {
  std::string text = to_json().dump(2) + "\n";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path, ": cannot create");
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

int64_t ModelConfig::param_count() const {
  int64_t h = hidden_size, kv = num_key_value_heads * head_dim, q = num_attention_heads * head_dim;
  int64_t attn = h * q * 2 + h * kv * 2 + (qkv_bias ? q + 2 * kv : 0) + (o_bias ? h : 0) +
                 (qk_norm ? 2 * head_dim : 0);
  int64_t mlp = 3 * h * intermediate_size;
  int64_t ffn = is_moe() ? num_local_experts * mlp + num_local_experts * h : mlp;
  int64_t layer = attn + ffn + (sandwich_norms ? 4 : 2) * h;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + h;
}

int64_t ModelConfig::active_param_count() const {
  if (!is_moe()) return param_count();
  int64_t mlp = 3 * hidden_size * intermediate_size;
  return param_count() - num_hidden_layers * (num_local_experts - num_experts_per_tok) * mlp;
}

}  // namespace lamina
