// Picking the next token from logits: repetition penalty (transformers'), presence and frequency
// penalties (OpenAI's, over the tokens this sampler produced), temperature, top-k, top-p, min-p
// (in transformers' order of warpers), seed.
#pragma once
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

namespace lamina {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off; CTRL-style as transformers (logit>0 ? /p : *p)
  // OpenAI's: logit -= frequency · count + presence · (count > 0), count = how often the token
  // occurs in the completion so far (not the prompt, as vLLM counts); 0: off; in [-2, 2].
  float presence_penalty = 0.0f, frequency_penalty = 0.0f;
  // transformers' MinPLogitsWarper: after top-p, tokens less likely than min_p times the most
  // likely one are dropped; 0: off.
  float min_p = 0.0f;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // logits[V] is modified in place. `history` are the ids seen so far (prompt + generated).
  int32_t sample(float* logits, int64_t V, const std::vector<int32_t>& history);

 private:
  int32_t pick(const float* logits, int64_t V);  // temperature, top-k, top-p, min-p
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int32_t> produced_;  // token -> times this sampler returned it
};

}  // namespace lamina
