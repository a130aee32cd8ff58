// New randomly initialised checkpoints: the embedded default model and real-shaped synthetic ones.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/weights.h"
#include "quant/quant_mix.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

struct InitOptions {
  DType dtype = DType::F32;
  uint64_t seed = 0;
  float std = 0.02f;          // N(0, std) for matrices, as transformers' initializer_range
  bool random_norms = false;  // norm gains ~ U(0.5, 1.5) instead of 1 (tests see them applied)
  MoeLayout layout = MoeLayout::Split;
  uint64_t shard_bytes = 5000000000ull;
  bool progress = true;
};

// config.json contents of a named shape: tiny, tiny-mistral, tiny-mixtral, llama2-7b,
// mistral-7b, openchat-3.5, solar-10.7b, mixtral-8x7b.
nlohmann::json preset_config(const std::string& shape);
std::vector<std::string> preset_names();

// Streams every tensor of model_tensor_specs(c) into dir as safetensors, one tensor in memory at
// a time. Values depend only on (seed, tensor name, index): the same for any thread count.
void write_random_weights(const ModelConfig& c, const std::string& dir, const InitOptions& opt);
// The same values written straight into one GGUF file in llama.cpp's layout, matrices quantized
// to `type` as they are generated (no checkpoint in between): real shapes too large to hold as
// bf16 here (Mixtral-8x7B: 93 GB) become a 26 GB Q4_0 file a frozen LoRA base can map.
void write_random_gguf(const ModelConfig& c, const Tokenizer& tok, const std::string& path,
                       const InitOptions& opt, const QuantMix& mix);

}  // namespace lamina
