// Autoregressive generation with a KV cache, streaming text as it is produced.
#pragma once
#include <functional>
#include <span>
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
  // OpenAI's logprobs: -1 off; else each generated token's log-probability under the model
  // (log-softmax of the raw logits, before penalties and temperature, as vLLM reports them) and
  // the `top_logprobs` most likely alternatives (0..20).
  int64_t top_logprobs = -1;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

struct GenerateResult {
  std::vector<int32_t> ids;            // generated tokens (the stop token excluded)
  std::string text;                    // their text, cut before a stop string
  std::string stop_reason;             // "eos", "stop_string", "length"
  std::vector<TokenLogprob> logprobs;  // one per id, when GenerateOptions::top_logprobs >= 0
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;
};

// A piece of a continuation's text as it becomes final, with the log-probabilities of the tokens
// whose text it makes whole (when GenerateOptions::top_logprobs >= 0; else none). Pieces and
// tokens need not be one to one: a token whose text is held back (a stop string's possible start,
// part of a multi-byte character) comes with a later piece, and a piece may carry no text (a
// token whose text is empty) or several tokens.
using TextCallback =
    std::function<void(const std::string& text, std::span<const TokenLogprob> logprobs)>;

// One sequence's continuation, token by token: sampling, stop tokens and stop strings, and its
// text streamed as it becomes final (held back while it might be the start of a stop string or of
// a multi-byte character). generate() drives one; generate_batch (generate/batch_generate.h)
// drives many through one batched forward.
class Continuation {
 public:
  Continuation(const Model& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
               const GenerateOptions& opt, TextCallback on_text = {});
  // From the logits [V] of the sequence's last position (modified), the next token to run, or -1
  // when the continuation has ended (then result() is final).
  int32_t step(float* logits);
  // Ends it early (reason: "context" when its cache is full).
  void end(const std::string& reason);
  bool done() const { return done_; }
  GenerateResult& result() { return r_; }

 private:
  void finish(const std::string& reason);
  const Tokenizer& tok_;
  GenerateOptions opt_;
  TextCallback on_text_;
  std::vector<int32_t> stop_ids_, history_;
  Sampler sampler_;
  int64_t vocab_;
  GenerateResult r_;
  size_t emitted_ = 0;  // bytes of r_.text passed to on_text_
  size_t covered_ = 0;  // tokens whose logprobs were passed to on_text_
  bool done_ = false;
};

// Continues `prompt` with the cache already holding its first cache.len tokens (those are not
// recomputed: multi-turn chat reuses the shared prefix). on_text receives text increments
// (TextCallback).
GenerateResult generate(const Model& model, const Tokenizer& tok,
                        const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        KVCache& cache, const TextCallback& on_text = {});

// Rewinds the cache to the longest prefix it shares with `tokens` (keeping at least one token
// to run), so a following generate() computes only what is new.
void reuse_cache_prefix(KVCache& cache, const std::vector<int32_t>& cached,
                        const std::vector<int32_t>& tokens);

}  // namespace lamina
