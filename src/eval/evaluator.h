// Scoring a model on evaluation tasks with lm-evaluation-harness's rules: log-likelihood multiple
// choice (acc, acc_norm, mc2, Winogrande's partial scoring), generation with stop strings, regex
// answer extraction and exact match, and sliding-window perplexity / bits per byte.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/task.h"
#include "generate/sampler.h"
#include "model/model.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

// log p(continuation | context): context and continuation encoded together (BOS first), split at
// the context's own token length; the KV cache keeps the longest shared prefix between calls, so a
// few-shot context is computed once per item.
class LoglikelihoodScorer {
 public:
  LoglikelihoodScorer(const Model& m, const Tokenizer& t, bool bos);
  double score(const std::string& context, const std::string& continuation,
               int64_t* n_tokens = nullptr);

 private:
  const Model& m_;
  const Tokenizer& t_;
  bool bos_;
  KVCache cache_;
  std::vector<int32_t> cached_;  // tokens whose keys/values the cache holds
  std::vector<float> logits_;
};

struct EvalSettings {
  SamplingParams sampling;  // generation tasks
  int64_t limit = 0;        // first N items (0: all)
  std::string label;        // the sweep setting's name ("default", "temperature=0.7", ...)
  // Multiple choice: requests are sorted by length and packed into rows of up to this many tokens,
  // one forward per row (attention kept per request). 0: one request at a time, sharing the
  // KV-cache prefix between consecutive requests.
  int64_t batch_tokens = 1024;
  // Generation: further token ids that end a reply (the model's generation_config.json), and the
  // chat format of `chat: true` tasks (choose_chat_format: the model's own template, as lm-eval's
  // apply_chat_template renders it), as `generate` uses them.
  std::vector<int32_t> stop_ids;
  std::optional<ChatFormat> chat;
  // BOS before each request: "auto" follows the task's `bos`, whose "auto" is lm-eval 0.4.13's
  // rule (the tokenizer's own default: tokenizer_config.json's add_bos_token); "never" is the
  // Open LLM Leaderboard v1's harness (b281b09, no special tokens); "always".
  std::string bos = "auto";
};

// Whether requests of task t start with BOS under settings s.
bool eval_adds_bos(const EvalTask& t, const EvalSettings& s, const Tokenizer& tok);

struct TaskResult {
  std::string task, setting;
  int64_t n = 0;
  std::map<std::string, double> value, stderr_;
  std::vector<nlohmann::json> samples;  // per item: prompt, scores, prediction, gold
};

TaskResult evaluate_task(const Model& m, const Tokenizer& tok, const EvalTask& t,
                         const EvalSettings& s);

// Extracts the first regex capture (or the whole match) and normalises a numeric answer as
// lm-eval's GSM8K exact match does: commas and '$' removed, a trailing '.' dropped, trimmed.
std::string extract_answer(const std::string& text, const std::string& regex);

// Log-likelihoods of (context, continuation) requests: packed rows (batch_tokens > 0) or one by
// one.
std::vector<double> score_requests(const Model& m, const Tokenizer& tok,
                                   const std::vector<std::pair<std::string, std::string>>& requests,
                                   int64_t batch_tokens, bool bos);

struct PerplexityResult {
  double nll = 0, perplexity = 0, bits_per_byte = 0;
  int64_t tokens = 0, bytes = 0;
};
// Every token scored once with up to `window` tokens of context; windows advance by `stride`.
PerplexityResult perplexity(const Model& m, const Tokenizer& tok, const std::string& text,
                            int64_t window, int64_t stride);

}  // namespace lamina
