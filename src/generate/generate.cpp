#include "generate/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace lamina {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bytes at the end of s that may still grow into a stop string or a UTF-8 character.
size_t held_back(const std::string& s, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (auto& st : stops)
    for (size_t n = std::min(st.size() - 1, s.size()); n > hold; --n)
      if (s.compare(s.size() - n, n, st, 0, n) == 0) {
        hold = n;
        break;
      }
  // Trailing U+FFFD: the decoder's stand-in for byte tokens that do not yet form a character;
  // the next byte token may complete it.
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t repl = 0;
  while (s.size() >= repl + 3 && s.compare(s.size() - repl - 3, 3, kReplacement) == 0) repl += 3;
  hold = std::max(hold, repl);
  // An incomplete trailing UTF-8 sequence.
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) hold = std::max(hold, back);
    break;
  }
  return hold;
}

}  // namespace

void reuse_cache_prefix(KVCache& cache, const std::vector<int32_t>& cached,
                        const std::vector<int32_t>& tokens) {
  size_t n = 0, lim = std::min({cached.size(), tokens.size(), size_t(cache.len)});
  while (n < lim && cached[n] == tokens[n]) ++n;
  if (n == tokens.size() && n > 0) --n;
  cache.len = int64_t(n);
}

Continuation::Continuation(const Model& model, const Tokenizer& tok,
                           const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                           TextCallback on_text)
    : tok_(tok),
      opt_(opt),
      on_text_(std::move(on_text)),
      stop_ids_(opt.stop_ids),
      history_(prompt),
      sampler_(opt.sampling),
      vocab_(model.config().vocab_size) {
  for (auto e : model.config().eos_token_ids) stop_ids_.push_back(int32_t(e));
  stop_ids_.push_back(tok.eos_id());
  r_.prompt_tokens = int64_t(prompt.size());
  r_.stop_reason = "length";
}

int32_t Continuation::step(float* logits) {
  if (done_) return -1;
  if (int64_t(r_.ids.size()) >= opt_.max_new_tokens) {
    finish("length");
    return -1;
  }
  // Rows beyond the tokenizer (a vocabulary padded to a multiple: Qwen's 151936 for 151669
  // tokens, a tiny tokenizer on a real shape) are no token: never chosen.
  for (int64_t v = tok_.size(); v < vocab_; ++v) logits[v] = -INFINITY;
  // The model's log-probabilities, taken before the sampler changes the logits in place.
  std::vector<float> logp;
  if (opt_.top_logprobs >= 0) {
    logp.assign(logits, logits + vocab_);
    const float mx = *std::max_element(logp.begin(), logp.end());
    double sum = 0;
    for (float v : logp) sum += std::exp(double(v - mx));
    const float lse = mx + float(std::log(sum));
    for (float& v : logp) v -= lse;
  }
  const int32_t next = sampler_.sample(logits, vocab_, history_);
  if (std::find(stop_ids_.begin(), stop_ids_.end(), next) != stop_ids_.end()) {
    finish("eos");
    return -1;
  }
  if (opt_.top_logprobs >= 0) {
    TokenLogprob t{next, logp[size_t(next)], {}};
    std::vector<int32_t> order(static_cast<size_t>(vocab_));
    for (int32_t i = 0; i < int32_t(vocab_); ++i) order[size_t(i)] = i;
    const size_t k = size_t(std::min<int64_t>(opt_.top_logprobs, vocab_));
    std::partial_sort(
        order.begin(), order.begin() + ptrdiff_t(k), order.end(), [&](int32_t a, int32_t b) {
          return logp[size_t(a)] > logp[size_t(b)] || (logp[size_t(a)] == logp[size_t(b)] && a < b);
        });
    for (size_t i = 0; i < k; ++i) t.top.push_back({order[i], logp[size_t(order[i])]});
    r_.logprobs.push_back(std::move(t));
  }
  r_.ids.push_back(next);
  history_.push_back(next);
  const std::string text = tok_.decode(r_.ids);
  size_t cut = std::string::npos;
  for (auto& s : opt_.stop_strings)
    if (!s.empty()) cut = std::min(cut, text.find(s));
  if (cut != std::string::npos) {
    r_.text = text.substr(0, cut);
    finish("stop_string");
    return -1;
  }
  r_.text = text;
  const size_t safe = text.size() - held_back(text, opt_.stop_strings);
  // The tokens' logprobs go with the piece that completes their text: all of them once nothing
  // is held back.
  const size_t covered = safe == text.size() ? r_.logprobs.size() : covered_;
  if (on_text_ && (safe > emitted_ || covered > covered_))
    on_text_(safe > emitted_ ? text.substr(emitted_, safe - emitted_) : std::string(),
             std::span<const TokenLogprob>(r_.logprobs).subspan(covered_, covered - covered_));
  emitted_ = std::max(emitted_, safe);
  covered_ = covered;
  if (int64_t(r_.ids.size()) == opt_.max_new_tokens) {
    finish("length");
    return -1;
  }
  return next;
}

void Continuation::end(const std::string& reason) {
  if (!done_) finish(reason);
}

void Continuation::finish(const std::string& reason) {
  r_.stop_reason = reason;
  if (on_text_ && (r_.text.size() > emitted_ || r_.logprobs.size() > covered_))
    on_text_(r_.text.size() > emitted_ ? r_.text.substr(emitted_) : std::string(),
             std::span<const TokenLogprob>(r_.logprobs).subspan(covered_));
  emitted_ = r_.text.size();
  covered_ = r_.logprobs.size();
  done_ = true;
}

GenerateResult generate(const Model& model, const Tokenizer& tok,
                        const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        KVCache& cache, const TextCallback& on_text) {
  if (prompt.empty()) fail("empty prompt: nothing to continue");
  if (cache.len >= int64_t(prompt.size())) fail("internal: cache holds the whole prompt");
  if (int64_t(prompt.size()) > cache.capacity)
    fail("prompt of ", prompt.size(), " tokens is longer than the context of ", cache.capacity,
         " tokens");
  Continuation c(model, tok, prompt, opt, on_text);
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  auto t0 = std::chrono::steady_clock::now();
  model.forward(prompt.data() + cache.len, int64_t(prompt.size()) - cache.len, cache, logits.data(),
                false);
  const double prompt_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int32_t next; (next = c.step(logits.data())) >= 0;) {
    if (cache.len >= cache.capacity) {
      c.end("context");
      break;
    }
    model.forward(&next, 1, cache, logits.data(), false);
  }
  GenerateResult r = std::move(c.result());
  r.prompt_seconds = prompt_seconds;
  r.decode_seconds = seconds_since(t0);
  return r;
}

}  // namespace lamina
