// Picking the next token from logits: repetition penalty, temperature, top-k, top-p, seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace lamina {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off; CTRL-style as transformers (logit>0 ? /p : *p)
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // logits[V] is modified in place. `history` are the ids seen so far (prompt + generated).
  int32_t sample(float* logits, int64_t V, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace lamina
