// lamina info: what a model directory holds, from config.json (weights optional).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/progress.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace lamina {

int cmd_info(int argc, char** argv) {
  Args a("info",
         "Architecture, parameter counts (total and active for MoE) and memory at "
         "f32/bf16/8-bit/4-bit.\n"
         "Needs only config.json; safetensors weights, when present, are listed too.",
         {{"model", "DIR", "Hugging Face model directory", kRequired},
          {"json", "", "print JSON instead of text", ""}});
  if (!a.parse(argc, argv)) return 0;
  std::string dir = a.str("model");
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
