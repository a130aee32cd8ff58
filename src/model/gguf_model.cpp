#include "model/gguf_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "core/error.h"
#include "io/gguf_names.h"
#include "io/gguf_reader.h"
#include "io/mapped_file.h"
#include "io/model_config.h"
#include "model/weights.h"

namespace lamina {

bool is_gguf_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  if (f && std::memcmp(magic, "GGUF", 4) == 0) return true;
  // A file is never a model directory: say what it is not, rather than failing later on a
  // missing config.json or tokenizer.
  fail(path, ": not a GGUF file (the first bytes are not 'GGUF') and not a model directory");
}

namespace {

DType dtype_of(uint32_t ggml, const std::string& where, const std::string& name) {
  if (auto t = ggml_type_from_id(ggml)) return dtype_from_ggml(*t);
  std::string buf;
  fail(where, ": tensor '", name, "' is ", ggml_type_name_or_id(ggml, buf),
       ", which lamina does not run (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k)");
}

// transformers' config.json fields from llama.cpp's metadata keys.
nlohmann::json config_from_metadata(const GgufFile& g, int64_t vocab, bool tied,
                                    const std::string& where,
                                    const std::function<bool(const std::string&)>& has_tensor) {
  const auto& m = g.metadata;
  auto get = [&](const std::string& k) -> const nlohmann::json& {
    auto it = m.find(k);
    if (it == m.end()) fail(where, ": metadata '", k, "' is missing");
    return *it;
  };
  const std::string arch = get("general.architecture").is_string()
                               ? get("general.architecture").get<std::string>()
                               : std::string();
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3")
    fail(where, ": architecture '", get("general.architecture").dump(),
         "' (lamina runs llama.cpp's 'llama' (Llama, Mistral, Mixtral), 'qwen2' and 'qwen3')");
  auto key = [&](const char* k) { return arch + "." + k; };
  const int64_t heads = get(key("attention.head_count")).get<int64_t>();
  const int64_t hidden = get(key("embedding_length")).get<int64_t>();
  nlohmann::json c = {
      {"hidden_size", hidden},
      {"num_hidden_layers", get(key("block_count"))},
      {"intermediate_size", get(key("feed_forward_length"))},
      {"num_attention_heads", heads},
      {"num_key_value_heads", m.value(key("attention.head_count_kv"), nlohmann::json(heads))},
      {"max_position_embeddings", get(key("context_length"))},
      {"rms_norm_eps", get(key("attention.layer_norm_rms_epsilon"))},
      {"rope_theta", m.value(key("rope.freq_base"), nlohmann::json(10000.0))},
      {"vocab_size", vocab},
      {"tie_word_embeddings", tied},
      {"bos_token_id", m.value("tokenizer.ggml.bos_token_id", nlohmann::json(1))},
      {"eos_token_id", m.value("tokenizer.ggml.eos_token_id", nlohmann::json(2))},
      {"torch_dtype", "float32"}};
  // Explicit always: Qwen3's config default (128) is not hidden / heads.
  c["head_dim"] = m.value(key("attention.key_length"), nlohmann::json(heads ? hidden / heads : 0));
  if (m.contains(key("expert_count"))) {
    c["model_type"] = "mixtral";
    c["num_local_experts"] = m[key("expert_count")];
    c["num_experts_per_tok"] = get(key("expert_used_count"));
  } else {
    c["model_type"] = arch;
  }
  // yarn: the keys convert_hf_to_gguf writes; the rest takes transformers' defaults.
  if (m.value(key("rope.scaling.type"), nlohmann::json("")) == "yarn")
    c["rope_scaling"] = {
        {"rope_type", "yarn"},
        {"factor", get(key("rope.scaling.factor"))},
        {"original_max_position_embeddings", get(key("rope.scaling.original_context_length"))}};
  // llama.cpp's llama loads q/k/v/o biases where a file has them (transformers' attention_bias).
  if (arch == "llama" && has_tensor("blk.0.attn_q.bias")) c["attention_bias"] = true;
  return c;
}

}  // namespace

bool GgufCheckpoint::is_view(const Tensor& t) const {
  const auto* p = static_cast<const uint8_t*>(t.data);
  return map && p >= map->data() && p < map->data() + map->size();
}

GgufCheckpoint read_gguf_checkpoint(const std::string& path) {
  auto map = MappedFile::open(path);
  const GgufFile g = parse_gguf(map->data(), map->size(), path);
  std::map<std::string, const GgufTensorInfo*> by_name;
  for (auto& t : g.tensors) by_name[t.name] = &t;
  auto find = [&](const std::string& n) -> const GgufTensorInfo& {
    auto it = by_name.find(n);
    if (it == by_name.end()) fail(path, ": missing tensor '", n, "'");
    return *it->second;
  };
  const GgufTensorInfo& embd = find("token_embd.weight");
  if (embd.ne.size() != 2) fail(path, ": token_embd.weight must be 2-D");
  ModelConfig cfg = ModelConfig::from_json(
      config_from_metadata(g, embd.ne[1], !by_name.count("output.weight"), path,
                           [&](const std::string& n) { return by_name.count(n) > 0; }),
      path);
  const int64_t hd = cfg.head_dim;
  // RoPE scaling as llama.cpp carries it: rope_freqs.weight [hd/2] (Llama 3.1+: each
  // frequency divided by its factor), or linear scaling in the metadata.
  if (auto it = by_name.find("rope_freqs.weight"); it != by_name.end()) {
    const GgufTensorInfo& t = *it->second;
    if (t.ne.size() != 1 || t.ne[0] != hd / 2 || t.type != 0 /* F32 */)
      fail(path, ": rope_freqs.weight must be F32 of [", hd / 2, "] (head_dim / 2)");
    const float* f = reinterpret_cast<const float*>(map->data() + g.data_offset + t.offset);
    cfg.rope_scaling.type = "freq_factors";
    cfg.rope_scaling.freq_factors.assign(f, f + hd / 2);
    for (float x : cfg.rope_scaling.freq_factors)
      if (!(x > 0) || !std::isfinite(x))
        fail(path, ": rope_freqs.weight holds ", x, " (must be > 0)");
  } else if (const std::string a = gguf_arch(cfg.arch);
             g.metadata.value(a + ".rope.scaling.type", nlohmann::json("")) == "linear") {
    cfg.rope_scaling.type = "linear";
    cfg.rope_scaling.factor =
        g.metadata.value(a + ".rope.scaling.factor", nlohmann::json(1.0)).get<double>();
    if (!(cfg.rope_scaling.factor > 0)) fail(path, ": ", a, ".rope.scaling.factor must be > 0");
  }

  // A GGUF tensor as a transformers-shaped view ([.., ne1, ne0]) into the map.
  auto view = [&](const std::string& n) {
    const GgufTensorInfo& t = find(n);
    Shape s(t.ne.rbegin(), t.ne.rend());
    void* p = const_cast<uint8_t*>(map->data()) + g.data_offset + t.offset;
    return Tensor::view_of(p, dtype_of(t.type, path, n), s, map);
  };
  // ggml's Q/K row order back to transformers': HF row h*hd + s*hd/2 + j is GGUF row h*hd + 2j + s.
  auto unpermuted = [&](const std::string& n) {
    const Tensor t = view(n);
    Tensor out = Tensor::empty(t.dtype, t.shape);
    const int64_t rows = t.shape[0];  // a Q or K bias: a one-column matrix
    const size_t rb = dtype_bytes(t.dtype, t.shape.size() == 2 ? t.shape[1] : 1);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = r / hd, i = r % hd, s = i / (hd / 2), j = i % (hd / 2);
      std::memcpy(static_cast<char*>(out.data) + size_t(r) * rb,
                  static_cast<const char*>(t.data) + size_t(h * hd + 2 * j + s) * rb, rb);
    }
    release_mapped_pages(t.data, t.nbytes());  // copied: the file's pages need not stay resident
    return out;
  };
  const bool permute = gguf_permutes_rope(cfg.arch);
  // transformers' names -> tensors, by the table export uses (io/gguf_names.h).
  std::map<std::string, Tensor> hf;
  for (auto& n : kGgufModelTensors)
    if (!(cfg.tie_word_embeddings && std::string(n.hf) == "lm_head.weight"))
      hf[n.hf] = view(n.gguf);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".",
                      b = "blk." + std::to_string(l) + ".";
    auto bind = [&](const GgufName& n) {
      hf[p + n.hf] = n.rope_heads && permute ? unpermuted(b + n.gguf) : view(b + n.gguf);
    };
    for (auto& n : kGgufLayerTensors) bind(n);
    for (auto& n : kGgufAttentionExtras)
      if (by_name.count(b + n.gguf)) bind(n);
    if (!cfg.is_moe()) {
      for (auto& n : kGgufDenseMlp) hf[p + n.hf] = view(b + n.gguf);
      continue;
    }
    hf[p + "block_sparse_moe.gate.weight"] = view(b + kGgufRouter);
    for (auto& n : kGgufExperts) {
      const Tensor stacked = view(b + n.gguf);  // [E, rows, cols]
      for (int64_t e = 0; e < cfg.num_local_experts; ++e)
        hf[p + "block_sparse_moe.experts." + std::to_string(e) + "." + n.hf] = stacked.select0(e);
    }
  }
  for (auto& spec : model_tensor_specs(cfg, MoeLayout::Split)) {
    auto it = hf.find(spec.name);
    if (it == hf.end()) fail(path, ": no tensor for '", spec.name, "'");
    if (it->second.shape != spec.shape)
      fail(path, ": tensor for '", spec.name, "' has shape ", shape_str(it->second.shape),
           ", the metadata implies ", shape_str(spec.shape));
  }
  return GgufCheckpoint{cfg, std::move(hf), g.tokens, map};
}

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& opt) {
  GgufCheckpoint ck = read_gguf_checkpoint(path);
  ModelWeights w;
  w.layers.resize(size_t(ck.cfg.num_hidden_layers));
  for (auto& spec : model_tensor_specs(ck.cfg, MoeLayout::Split)) {
    Tensor t = ck.tensors.at(spec.name);
    const DType want = inference_dtype(spec, t.dtype, opt.dtype);
    if (t.dtype != want) t = t.to(want);
    spec.bind(w, t);
  }
  return std::make_unique<Model>(ck.cfg, std::move(w), opt.pack_weights);
}

}  // namespace lamina
