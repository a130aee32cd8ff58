// Executes a layer-surgery recipe: validates every source and tensor first, then streams tensors
// one at a time from the memory-mapped inputs into a new HF model directory.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "surgery/recipe.h"

namespace lamina {

struct UpscaleOptions {
  std::string out;
  bool force = false;
  uint64_t shard_bytes = 5000000000ull;
  std::optional<DType> dtype;  // overrides the recipe's dtype
  bool config_only = false;    // write config, tokenizer and card, no weights (shape arithmetic)
  bool progress = true;
  std::vector<int64_t> new_layers;  // LLaMA-Pro: recorded in expanded_layers.json
};

struct UpscaleResult {
  ModelConfig config;
  int64_t tensors = 0;
  uint64_t bytes = 0;
  size_t shards = 0;
  double seconds = 0;
};

UpscaleResult upscale(const Recipe& recipe, const UpscaleOptions& opt);

}  // namespace lamina
