#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "core/error.h"

namespace lamina {

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  if (p.temperature < 0) fail("--temperature must be >= 0");
  if (p.top_p <= 0 || p.top_p > 1) fail("--top-p must be in (0, 1]");
  if (p.top_k < 0) fail("--top-k must be >= 0");
  if (p.repetition_penalty <= 0) fail("--repetition-penalty must be > 0");
  if (!(p.min_p >= 0 && p.min_p <= 1)) fail("--min-p must be in [0, 1]");
  if (!(std::fabs(p.presence_penalty) <= 2)) fail("--presence-penalty must be in [-2, 2]");
  if (!(std::fabs(p.frequency_penalty) <= 2)) fail("--frequency-penalty must be in [-2, 2]");
}

int32_t Sampler::sample(float* logits, int64_t V, const std::vector<int32_t>& history) {
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= V) continue;
      float& l = logits[id];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f)
    for (auto [id, n] : produced_)
      if (id >= 0 && id < V) logits[id] -= p_.frequency_penalty * float(n) + p_.presence_penalty;
  const int32_t next = pick(logits, V);
  ++produced_[next];
  return next;
}

int32_t Sampler::pick(const float* logits, int64_t V) {
  if (p_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  // Candidates sorted by logit (descending), cut by top-k, then by top-p on the softmax.
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = p_.top_k > 0 ? std::min(p_.top_k, V) : V;
  auto by_logit = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (k < V) {
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
    idx.resize(size_t(k));
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  std::vector<double> prob(idx.size());
  const double mx = logits[idx[0]] / p_.temperature;
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i)
    sum += prob[i] = std::exp(logits[idx[i]] / p_.temperature - mx);
  size_t keep = idx.size();
  if (p_.top_p < 1.0f) {
    // Keep the smallest prefix whose mass reaches top_p (always at least one token).
    double cum = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
      cum += prob[i] / sum;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (p_.min_p > 0.0f) {  // the candidates are sorted: those at or above min_p · max are a prefix
    const double floor = double(p_.min_p) * prob[0];
    size_t n = 1;
    while (n < keep && prob[n] >= floor) ++n;
    keep = n;
  }
  std::discrete_distribution<size_t> dist(prob.begin(), prob.begin() + long(keep));
  return idx[dist(rng_)];
}

}  // namespace lamina
