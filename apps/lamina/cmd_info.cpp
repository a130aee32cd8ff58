// lamina info: what a model directory holds, from config.json (weights optional).
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/progress.h"
#include "io/gguf_reader.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace lamina {

namespace {

// A GGUF file (e.g. from export-gguf): its metadata and tensors, as llama.cpp will read them.
int gguf_info(const std::string& path, bool as_json) {
  const GgufFile g = read_gguf(path);
  std::map<std::string, std::pair<int64_t, uint64_t>> by_type;  // type -> (tensors, bytes)
  uint64_t bytes = 0;
  double params = 0;
  for (auto& t : g.tensors) {
    std::string buf;
    auto& e = by_type[ggml_type_name_or_id(t.type, buf)];
    ++e.first, e.second += t.bytes, bytes += t.bytes;
    double n = 1;
    for (auto d : t.ne) n *= double(d);
    params += n;
  }
  if (as_json) {
    nlohmann::json j = {{"gguf_version", g.version},
                        {"metadata", g.metadata},
                        {"tensors", nlohmann::json::array()}};
    for (auto& t : g.tensors) {
      std::string buf;
      j["tensors"].push_back({{"name", t.name},
                              {"ne", t.ne},
                              {"type", ggml_type_name_or_id(t.type, buf)},
                              {"bytes", t.bytes}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto meta = [&](const std::string& k) {
    auto it = g.metadata.find(k);
    return it == g.metadata.end() ? std::string("-")
           : it->is_string()      ? it->get<std::string>()
                                  : it->dump();
  };
  const std::string arch = meta("general.architecture");
  std::printf("file:         %s (GGUF v%u)\n", path.c_str(), g.version);
  std::printf(
      "architecture: %s, %s layers, hidden %s, heads %s (kv %s), context %s\n", arch.c_str(),
      meta(arch + ".block_count").c_str(), meta(arch + ".embedding_length").c_str(),
      meta(arch + ".attention.head_count").c_str(), meta(arch + ".attention.head_count_kv").c_str(),
      meta(arch + ".context_length").c_str());
  auto tok = g.array_lengths.find("tokenizer.ggml.tokens");
  std::printf("vocabulary:   %s tokens (%s), chat template: %s\n",
              tok == g.array_lengths.end() ? "-" : std::to_string(tok->second).c_str(),
              meta("tokenizer.ggml.model").c_str(),
              g.metadata.contains("tokenizer.chat_template") ? "yes" : "no");
  std::printf("parameters:   %s in %zu tensors, %s of data\n", format_count(params).c_str(),
              g.tensors.size(), format_bytes(double(bytes)).c_str());
  for (auto& [type, e] : by_type)
    std::printf("  %-6s %4lld tensors  %s\n", type.c_str(), (long long)e.first,
                format_bytes(double(e.second)).c_str());
  return 0;
}

}  // namespace

int cmd_info(int argc, char** argv) {
  Args a("info",
         "Architecture, parameter counts (total and active for MoE) and memory at "
         "f32/bf16/8-bit/4-bit.\n"
         "Needs only config.json; safetensors weights, when present, are listed too.",
         {{"model", "DIR", "Hugging Face model directory, or a .gguf file", kRequired},
          {"json", "", "print JSON instead of text", ""}});
  if (!a.parse(argc, argv)) return 0;
  std::string dir = a.str("model");
  if (std::filesystem::is_regular_file(dir)) return gguf_info(dir, a.flag("json"));
  ModelConfig c = ModelConfig::load(dir);
  const double total = double(c.param_count()), active = double(c.active_param_count());
  // Bytes per parameter: Q8_0 stores 32 weights in 34 bytes, Q4_0 in 18 (llama.cpp's blocks).
  struct Mem {
    const char* name;
    double bytes_per_param;
  } mems[] = {{"f32", 4}, {"bf16", 2}, {"q8_0", 34.0 / 32}, {"q4_0", 18.0 / 32}};
  nlohmann::json j = {{"model_type", arch_name(c.arch)},
                      {"num_hidden_layers", c.num_hidden_layers},
                      {"hidden_size", c.hidden_size},
                      {"intermediate_size", c.intermediate_size},
                      {"num_attention_heads", c.num_attention_heads},
                      {"num_key_value_heads", c.num_key_value_heads},
                      {"head_dim", c.head_dim},
                      {"vocab_size", c.vocab_size},
                      {"max_position_embeddings", c.max_position_embeddings},
                      {"sliding_window", c.sliding_window ? nlohmann::json(*c.sliding_window)
                                                          : nlohmann::json(nullptr)},
                      {"parameters", c.param_count()},
                      {"active_parameters", c.active_param_count()}};
  if (c.is_moe())
    j["experts"] = {{"num_local_experts", c.num_local_experts},
                    {"num_experts_per_tok", c.num_experts_per_tok}};
  for (auto& m : mems) j["memory_bytes"][m.name] = uint64_t(total * m.bytes_per_param);
  bool has_weights =
      file_exists(dir + "/model.safetensors") || file_exists(dir + "/model.safetensors.index.json");
  if (has_weights) {
    Checkpoint ck(dir);
    uint64_t bytes = 0;
    std::map<std::string, int> dtypes;
    for (auto& n : ck.names()) {
      auto& i = ck.info(n);
      bytes += i.end - i.begin;
      dtypes[dtype_name(i.dtype)]++;
    }
    j["checkpoint"] = {{"tensors", ck.names().size()}, {"bytes", bytes}, {"dtypes", dtypes}};
  }
  if (a.flag("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:        %s\n", dir.c_str());
  std::printf("architecture: %s, %lld layers, hidden %lld, intermediate %lld\n", arch_name(c.arch),
              (long long)c.num_hidden_layers, (long long)c.hidden_size,
              (long long)c.intermediate_size);
  std::printf(
      "attention:    %lld heads, %lld kv heads, head_dim %lld, rope_theta %g, sliding_window %s\n",
      (long long)c.num_attention_heads, (long long)c.num_key_value_heads, (long long)c.head_dim,
      c.rope_theta, c.sliding_window ? std::to_string(*c.sliding_window).c_str() : "none");
  if (c.is_moe())
    std::printf("experts:      %lld, top-%lld routing\n", (long long)c.num_local_experts,
                (long long)c.num_experts_per_tok);
  std::printf("vocabulary:   %lld, context %lld\n", (long long)c.vocab_size,
              (long long)c.max_position_embeddings);
  std::printf("parameters:   %s (%lld)\n", format_count(total).c_str(), (long long)c.param_count());
  if (c.is_moe()) std::printf("active:       %s per token\n", format_count(active).c_str());
  std::printf("memory:      ");
  for (auto& m : mems)
    std::printf(" %s %s", m.name, format_bytes(total * m.bytes_per_param).c_str());
  std::printf("\n");
  if (has_weights)
    std::printf("checkpoint:   %zu tensors, %s\n", size_t(j["checkpoint"]["tensors"]),
                format_bytes(double(j["checkpoint"]["bytes"].get<uint64_t>())).c_str());
  return 0;
}

}  // namespace lamina
