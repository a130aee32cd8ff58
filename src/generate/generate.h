// Autoregressive generation with a KV cache, streaming text as it is produced.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "generate/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

struct GenerateOptions {
  SamplingParams sampling;
  int64_t max_new_tokens = 128;
  std::vector<int32_t> stop_ids;          // besides the model's EOS ids
  std::vector<std::string> stop_strings;  // generation stops before the first occurrence
};

struct GenerateResult {
  std::vector<int32_t> ids;  // generated tokens (the stop token excluded)
  std::string text;          // their text, cut before a stop string
  std::string stop_reason;   // "eos", "stop_string", "length"
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;
};

// Continues `prompt` with the cache already holding its first cache.len tokens (those are not
// recomputed: multi-turn chat reuses the shared prefix). on_text receives text increments,
// held back while they might be the start of a stop string or of a multi-byte character.
GenerateResult generate(const Model& model, const Tokenizer& tok,
                        const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        KVCache& cache,
                        const std::function<void(const std::string&)>& on_text = {});

// Rewinds the cache to the longest prefix it shares with `tokens` (keeping at least one token
// to run), so a following generate() computes only what is new.
void reuse_cache_prefix(KVCache& cache, const std::vector<int32_t>& cached,
                        const std::vector<int32_t>& tokens);

}  // namespace lamina
