#include "generate/batch_generate.h"

#include <algorithm>
#include <memory>
#include <numeric>

#include "core/error.h"

namespace lamina {

std::vector<GenerateResult> generate_batch(const Model& model, const Tokenizer& tok,
                                           const std::vector<BatchRequest>& requests, int64_t slots,
                                           int64_t slot_capacity, BatchStats* stats) {
  if (slots < 1) fail("generate_batch: need at least one slot, got ", slots);
  SlotKVCache cache = model.new_slot_cache(slots, slot_capacity);
  for (size_t i = 0; i < requests.size(); ++i) {
    const int64_t n = int64_t(requests[i].prompt.size());
    if (n == 0) fail("request ", i, ": empty prompt: nothing to continue");
    if (n > cache.slot_capacity)
      fail("request ", i, ": prompt of ", n, " tokens is longer than the context of ",
           cache.slot_capacity, " tokens");
  }
  // Waiting requests by arrival, then index.
  std::vector<size_t> waiting(requests.size());
  std::iota(waiting.begin(), waiting.end(), size_t(0));
  std::stable_sort(waiting.begin(), waiting.end(),
                   [&](size_t a, size_t b) { return requests[a].arrival < requests[b].arrival; });
  struct Running {
    size_t request;
    std::unique_ptr<Continuation> cont;
    std::vector<int32_t> feed;  // what the next pass runs for it: the prompt, then one token
  };
  std::vector<std::unique_ptr<Running>> slot(static_cast<size_t>(slots));
  // What each slot's cache holds (positions [0, len)), kept after its request ends: a later
  // request sharing a prefix with it reuses those keys and values.
  std::vector<std::vector<int32_t>> held(static_cast<size_t>(slots));
  std::vector<GenerateResult> results(requests.size());
  const int64_t V = model.config().vocab_size;
  std::vector<float> logits;
  size_t next_waiting = 0;
  BatchStats st;
  for (int64_t step = 0;; ++step) {
    // Admit arrived requests into free slots: the free slot whose cache shares the longest
    // prefix with the prompt (at least its last token still runs), the first such on a tie.
    while (next_waiting < waiting.size() && requests[waiting[next_waiting]].arrival <= step) {
      const std::vector<int32_t>& prompt = requests[waiting[next_waiting]].prompt;
      int64_t best = -1, best_len = -1;
      for (size_t s = 0; s < slot.size(); ++s) {
        if (slot[s]) continue;
        size_t n = 0;
        const size_t lim = std::min({held[s].size(), prompt.size() - 1, size_t(cache.len[s])});
        while (n < lim && held[s][n] == prompt[n]) ++n;
        if (int64_t(n) > best_len) best = int64_t(s), best_len = int64_t(n);
      }
      if (best < 0) break;  // no free slot
      const size_t r = waiting[next_waiting++];
      cache.len[size_t(best)] = best_len;
      held[size_t(best)].resize(size_t(best_len));
      st.prefix_reused += best_len;
      slot[size_t(best)] = std::make_unique<Running>(Running{
          r,
          std::make_unique<Continuation>(model, tok, prompt, requests[r].opt, requests[r].on_text),
          std::vector<int32_t>(prompt.begin() + best_len, prompt.end())});
    }
    std::vector<Model::SlotStep> steps;
    std::vector<size_t> of_step;
    for (size_t s = 0; s < slot.size(); ++s)
      if (slot[s]) {
        steps.push_back({slot[s]->feed.data(), int64_t(slot[s]->feed.size()), int64_t(s)});
        of_step.push_back(s);
      }
    if (steps.empty()) {
      if (next_waiting == waiting.size()) break;
      continue;  // idle until the next arrival
    }
    logits.resize(steps.size() * size_t(V));
    model.forward_slots(steps, cache, logits.data());
    for (size_t i = 0; i < of_step.size(); ++i) {
      auto& f = slot[of_step[i]]->feed;
      held[of_step[i]].insert(held[of_step[i]].end(), f.begin(), f.end());
    }
    ++st.steps;
    st.max_running = std::max(st.max_running, int64_t(steps.size()));
    for (auto& x : steps) st.tokens_computed += x.n;
    for (size_t i = 0; i < of_step.size(); ++i) {
      Running& run = *slot[of_step[i]];
      int32_t next = run.cont->step(logits.data() + i * size_t(V));
      if (next >= 0 && cache.len[of_step[i]] >= cache.slot_capacity) {
        run.cont->end("context");
        next = -1;
      }
      if (next < 0) {
        results[run.request] = std::move(run.cont->result());
        slot[of_step[i]].reset();
        continue;
      }
      run.feed.assign(1, next);
    }
  }
  if (stats) *stats = st;
  return results;
}

}  // namespace lamina
