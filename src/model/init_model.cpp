#include "model/init_model.h"

#include <cmath>
#include <functional>
#include <map>

#include "core/error.h"
#include "core/progress.h"
#include "io/safetensors.h"
#include "model/gguf_export.h"

namespace lamina {
using json = nlohmann::json;

namespace {

json tiny_base() {
  return {{"hidden_size", 64},         {"intermediate_size", 160}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4},  {"num_key_value_heads", 2}, {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5},      {"rope_theta", 10000.0},    {"vocab_size", 512},
          {"bos_token_id", 1},         {"eos_token_id", 2},        {"tie_word_embeddings", false},
          {"initializer_range", 0.02}, {"hidden_act", "silu"},     {"torch_dtype", "float32"}};
}

json big_base(int64_t layers, int64_t vocab, int64_t max_pos, double theta) {
  return {{"hidden_size", 4096},         {"intermediate_size", 14336},
          {"num_hidden_layers", layers}, {"num_attention_heads", 32},
          {"num_key_value_heads", 8},    {"max_position_embeddings", max_pos},
          {"rms_norm_eps", 1e-5},        {"rope_theta", theta},
          {"vocab_size", vocab},         {"bos_token_id", 1},
          {"eos_token_id", 2},           {"tie_word_embeddings", false},
          {"initializer_range", 0.02},   {"hidden_act", "silu"},
          {"torch_dtype", "bfloat16"}};
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Standard normal from a counter (Box-Muller on two hashed uniforms).
float normal_at(uint64_t key, uint64_t i) {
  uint64_t a = splitmix(key ^ (2 * i)), b = splitmix(key ^ (2 * i + 1));
  double u1 = (double(a >> 11) + 1.0) / 9007199254740993.0,
         u2 = double(b >> 11) / 9007199254740992.0;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"tiny",         "tiny-mistral", "tiny-mixtral", "tiny-qwen2",  "tiny-qwen3",
          "llama2-7b",    "mistral-7b",   "openchat-3.5", "solar-10.7b", "mixtral-8x7b",
          "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-7b",   "qwen3-0.6b",  "qwen3-8b"};
}

json preset_config(const std::string& shape) {
  json j;
  if (shape == "tiny") {
    j = tiny_base();
    j["model_type"] = "llama";
  } else if (shape == "tiny-mistral") {
    j = tiny_base();
    j["model_type"] = "mistral";
    j["sliding_window"] = 16;
  } else if (shape == "tiny-mixtral") {
    j = tiny_base();
    j["model_type"] = "mixtral";
    j["num_local_experts"] = 4;
    j["num_experts_per_tok"] = 2;
    j["router_aux_loss_coef"] = 0.02;
    j["sliding_window"] = nullptr;
  } else if (shape == "llama2-7b") {
    j = big_base(32, 32000, 4096, 10000.0);
    j["model_type"] = "llama";
    j["intermediate_size"] = 11008;
    j["num_key_value_heads"] = 32;
  } else if (shape == "mistral-7b") {
    j = big_base(32, 32000, 32768, 10000.0);
    j["model_type"] = "mistral";
    j["sliding_window"] = 4096;
  } else if (shape == "openchat-3.5") {
    j = big_base(32, 32002, 8192, 10000.0);
    j["model_type"] = "mistral";
    j["sliding_window"] = 4096;
    j["eos_token_id"] = 32000;
  } else if (shape == "solar-10.7b") {
    j = big_base(48, 32000, 4096, 10000.0);
    j["model_type"] = "llama";
    j["torch_dtype"] = "float16";
  } else if (shape == "mixtral-8x7b") {
    j = big_base(32, 32000, 32768, 1e6);
    j["model_type"] = "mixtral";
    j["num_local_experts"] = 8;
    j["num_experts_per_tok"] = 2;
    j["router_aux_loss_coef"] = 0.02;
    j["sliding_window"] = nullptr;
  } else if (shape == "tiny-qwen2") {
    j = tiny_base();
    j["model_type"] = "qwen2";
    j["tie_word_embeddings"] = true;
  } else if (shape == "tiny-qwen3") {
    j = tiny_base();
    j["model_type"] = "qwen3";
    j["head_dim"] = 32;
  } else if (shape == "llama-3.2-1b" || shape == "llama-3.1-8b") {
    // The Hub's config.json of meta-llama/Llama-3.2-1B and Llama-3.1-8B.
    const bool small = shape == "llama-3.2-1b";
    j = big_base(small ? 16 : 32, 128256, 131072, 500000.0);
    j["model_type"] = "llama";
    if (small) {
      j["hidden_size"] = 2048, j["intermediate_size"] = 8192, j["head_dim"] = 64;
      j["tie_word_embeddings"] = true;
    }
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", small ? 32.0 : 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
    j["bos_token_id"] = 128000;
    j["eos_token_id"] = {128001, 128008, 128009};
  } else if (shape == "qwen2.5-7b") {  // Qwen/Qwen2.5-7B-Instruct
    j = big_base(28, 152064, 32768, 1e6);
    j["model_type"] = "qwen2";
    j["hidden_size"] = 3584, j["intermediate_size"] = 18944;
    j["num_attention_heads"] = 28, j["num_key_value_heads"] = 4;
    j["rms_norm_eps"] = 1e-6;
    j["bos_token_id"] = 151643, j["eos_token_id"] = 151645;
  } else if (shape == "qwen3-0.6b" || shape == "qwen3-8b") {  // Qwen/Qwen3-0.6B, Qwen/Qwen3-8B
    const bool small = shape == "qwen3-0.6b";
    j = big_base(small ? 28 : 36, 151936, 40960, 1e6);
    j["model_type"] = "qwen3";
    j["head_dim"] = 128;
    j["intermediate_size"] = small ? 3072 : 12288;
    if (small) {
      j["hidden_size"] = 1024, j["num_attention_heads"] = 16;
      j["tie_word_embeddings"] = true;
    }
    j["rms_norm_eps"] = 1e-6;
    j["bos_token_id"] = 151643, j["eos_token_id"] = 151645;
  } else {
    std::string names;
    for (auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    fail("--shape: unknown shape '", shape, "' (known: ", names, ")");
  }
  return j;
}

namespace {
// Element i of tensor spec s: N(0, std) for matrices; 1 (or U(0.5, 1.5)) for norm gains.
float random_value(const TensorSpec& s, uint64_t key, int64_t i, const InitOptions& opt) {
  if (!s.is_norm) return opt.std * normal_at(key, uint64_t(i));
  return opt.random_norms ? 0.5f + float(splitmix(key + uint64_t(i)) >> 11) / 9007199254740992.0f
                          : 1.0f;
}
uint64_t tensor_key(const InitOptions& opt, const std::string& name) {
  return splitmix(opt.seed ^ splitmix(std::hash<std::string>{}(name)));
}
}  // namespace

void write_random_gguf(const ModelConfig& c, const Tokenizer& tok, const std::string& path,
                       const InitOptions& opt, const QuantMix& mix) {
  std::map<std::string, TensorSpec> specs;
  for (auto& s : model_tensor_specs(c, MoeLayout::Split)) specs[s.name] = s;
  GgufSource src{c, &tok, "random " + std::string(arch_name(c.arch)), false};
  src.read = [&](const std::string& name, int64_t offset, int64_t n, float* out) {
    const TensorSpec& s = specs.at(name);
    const uint64_t key = tensor_key(opt, name);
    for (int64_t i = 0; i < n; ++i) out[i] = random_value(s, key, offset + i, opt);
  };
  write_gguf(src, path, mix);
}

void write_random_weights(const ModelConfig& c, const std::string& dir, const InitOptions& opt) {
  auto specs = model_tensor_specs(c, opt.layout);
  std::vector<SafetensorsWriter::Planned> plan;
  // Every tensor in one dtype (norms included), as transformers' save_pretrained writes them.
  for (auto& s : specs) plan.push_back({s.name, opt.dtype, s.shape});
  SafetensorsWriter w(dir, plan, opt.shard_bytes);
  Progress bar("init", int64_t(w.total_bytes()), "B");
  int64_t done = 0;
  std::vector<float> buf;
  std::vector<uint8_t> out;
  for (auto& s : specs) {
    const int64_t n = shape_numel(s.shape);
    buf.resize(size_t(n));
    const uint64_t key = tensor_key(opt, s.name);
#pragma omp parallel for schedule(static) if (!s.is_norm)
    for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = random_value(s, key, i, opt);
    out.resize(size_t(n) * dtype_size(opt.dtype));
    convert_from_f32(buf.data(), out.data(), opt.dtype, size_t(n));
    w.write(s.name, out.data(), out.size());
    done += int64_t(out.size());
    if (opt.progress) bar.update(done);
  }
  w.finish();
}

}  // namespace lamina
