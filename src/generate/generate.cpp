#include "generate/generate.h"

#include <algorithm>
#include <chrono>

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

GenerateResult generate(const Model& model, const Tokenizer& tok,
                        const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                        KVCache& cache, const std::function<void(const std::string&)>& on_text) {
  if (prompt.empty()) fail("empty prompt: nothing to continue");
  if (cache.len >= int64_t(prompt.size())) fail("internal: cache holds the whole prompt");
  const auto& cfg = model.config();
  const int64_t V = cfg.vocab_size;
  if (int64_t(prompt.size()) > cache.capacity)
    fail("prompt of ", prompt.size(), " tokens is longer than the context of ", cache.capacity,
         " tokens");
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  std::vector<int32_t> stop_ids = opt.stop_ids;
  for (auto e : cfg.eos_token_ids) stop_ids.push_back(int32_t(e));
  stop_ids.push_back(tok.eos_id());
  Sampler sampler(opt.sampling);
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<int32_t> history = prompt;
  auto t0 = std::chrono::steady_clock::now();
  model.forward(prompt.data() + cache.len, int64_t(prompt.size()) - cache.len, cache, logits.data(),
                false);
  r.prompt_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  size_t emitted = 0;
  r.stop_reason = "length";
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    int32_t next = sampler.sample(logits.data(), V, history);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      r.stop_reason = "eos";
      break;
    }
    r.ids.push_back(next);
    history.push_back(next);
    std::string text = tok.decode(r.ids);
    size_t cut = std::string::npos;
    for (auto& s : opt.stop_strings)
      if (!s.empty()) cut = std::min(cut, text.find(s));
    if (cut != std::string::npos) {
      r.text = text.substr(0, cut);
      r.stop_reason = "stop_string";
      break;
    }
    r.text = text;
    size_t safe = text.size() - held_back(text, opt.stop_strings);
    if (on_text && safe > emitted) on_text(text.substr(emitted, safe - emitted));
    emitted = std::max(emitted, safe);
    if (step + 1 == opt.max_new_tokens) break;
    if (cache.len >= cache.capacity) {
      r.stop_reason = "context";
      break;
    }
    model.forward(&next, 1, cache, logits.data(), false);
  }
  if (on_text && r.text.size() > emitted) on_text(r.text.substr(emitted));
  r.decode_seconds = seconds_since(t0);
  return r;
}

}  // namespace lamina
