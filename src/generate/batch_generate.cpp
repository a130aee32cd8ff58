#include "generate/batch_generate.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "core/error.h"

namespace lamina {

BatchDecoder::BatchDecoder(const Model& model, const Tokenizer& tok, int64_t slots,
                           int64_t slot_capacity)
    : model_(model), tok_(tok) {
  if (slots < 1) fail("batch decoding: need at least one slot, got ", slots);
  cache_ = model.new_slot_cache(slots, slot_capacity);
  slot_.resize(size_t(slots));
  held_.resize(size_t(slots));
}

int64_t BatchDecoder::running() const {
  return int64_t(std::count_if(slot_.begin(), slot_.end(), [](auto& s) { return s != nullptr; }));
}

void BatchDecoder::check_prompt(const std::vector<int32_t>& prompt) const {
  if (prompt.empty()) fail("empty prompt: nothing to continue");
  if (int64_t(prompt.size()) > cache_.slot_capacity)
    fail("prompt of ", prompt.size(), " tokens is longer than the context of ",
         cache_.slot_capacity, " tokens");
}

void BatchDecoder::start(int64_t id, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                         TextCallback on_text) {
  check_prompt(prompt);
  int64_t best = -1, best_len = -1;
  for (size_t s = 0; s < slot_.size(); ++s) {
    if (slot_[s]) continue;
    size_t n = 0;
    const size_t lim = std::min({held_[s].size(), prompt.size() - 1, size_t(cache_.len[s])});
    while (n < lim && held_[s][n] == prompt[n]) ++n;
    if (int64_t(n) > best_len) best = int64_t(s), best_len = int64_t(n);
  }
  if (best < 0) fail("batch decoding: no free slot for request ", id);
  cache_.len[size_t(best)] = best_len;
  held_[size_t(best)].resize(size_t(best_len));
  stats_.prefix_reused += best_len;
  auto r = std::make_unique<Running>();
  r->id = id;
  r->cont = std::make_unique<Continuation>(model_, tok_, prompt, opt, std::move(on_text));
  r->feed.assign(prompt.begin() + best_len, prompt.end());
  slot_[size_t(best)] = std::move(r);
}

bool BatchDecoder::cancel(int64_t id) {
  for (auto& s : slot_)
    if (s && s->id == id) return s->cancelled = true;
  return false;
}

void BatchDecoder::cancel_all() {
  for (auto& s : slot_)
    if (s) s->cancelled = true;
}

std::vector<std::pair<int64_t, GenerateResult>> BatchDecoder::step() {
  std::vector<std::pair<int64_t, GenerateResult>> ended;
  std::vector<Model::SlotStep> steps;
  std::vector<size_t> of_step;
  for (size_t s = 0; s < slot_.size(); ++s) {
    if (!slot_[s]) continue;
    if (slot_[s]->cancelled) {  // its slot is free from this pass on
      slot_[s]->cont->end("cancelled");
      ended.emplace_back(slot_[s]->id, std::move(slot_[s]->cont->result()));
      slot_[s].reset();
      continue;
    }
    steps.push_back({slot_[s]->feed.data(), int64_t(slot_[s]->feed.size()), int64_t(s)});
    of_step.push_back(s);
  }
  if (steps.empty()) return ended;
  const size_t V = size_t(model_.config().vocab_size);
  logits_.resize(steps.size() * V);
  try {
    model_.forward_slots(steps, cache_, logits_.data());
  } catch (const std::exception& e) {
    // The pass failed (out of memory, a kernel's error): every sequence in it ends with stop
    // reason "error", its slot's cache no longer trusted; the decoder goes on with new requests.
    std::fprintf(stderr, "lamina: batched pass failed: %s\n", e.what());
    for (size_t s : of_step) {
      slot_[s]->cont->end("error");
      ended.emplace_back(slot_[s]->id, std::move(slot_[s]->cont->result()));
      slot_[s].reset();
      held_[s].clear();
      cache_.len[s] = 0;
    }
    return ended;
  }
  ++stats_.steps;
  stats_.max_running = std::max(stats_.max_running, int64_t(steps.size()));
  for (auto& x : steps) stats_.tokens_computed += x.n;
  for (size_t i = 0; i < of_step.size(); ++i) {
    const size_t s = of_step[i];
    Running& run = *slot_[s];
    held_[s].insert(held_[s].end(), run.feed.begin(), run.feed.end());
    int32_t next = -1;
    try {
      next = run.cont->step(logits_.data() + i * V);
    } catch (const std::exception& e) {  // this sequence alone ends (e.g. an undecodable id)
      std::fprintf(stderr, "lamina: request %lld: %s\n", (long long)run.id, e.what());
      run.cont->end("error");
    }
    if (next >= 0 && cache_.len[s] >= cache_.slot_capacity) {
      run.cont->end("context");
      next = -1;
    }
    if (next < 0) {
      ended.emplace_back(run.id, std::move(run.cont->result()));
      slot_[s].reset();
      continue;
    }
    run.feed.assign(1, next);
  }
  return ended;
}

std::vector<GenerateResult> generate_batch(const Model& model, const Tokenizer& tok,
                                           const std::vector<BatchRequest>& requests, int64_t slots,
                                           int64_t slot_capacity, BatchStats* stats) {
  BatchDecoder dec(model, tok, slots, slot_capacity);
  for (size_t i = 0; i < requests.size(); ++i) {
    try {
      dec.check_prompt(requests[i].prompt);
    } catch (const Error& e) {
      fail("request ", i, ": ", e.what());
    }
  }
  // Waiting requests by arrival, then index.
  std::vector<size_t> waiting(requests.size());
  std::iota(waiting.begin(), waiting.end(), size_t(0));
  std::stable_sort(waiting.begin(), waiting.end(),
                   [&](size_t a, size_t b) { return requests[a].arrival < requests[b].arrival; });
  std::vector<GenerateResult> results(requests.size());
  size_t next = 0, done = 0;
  for (int64_t step = 0; done < requests.size(); ++step) {
    while (next < waiting.size() && requests[waiting[next]].arrival <= step &&
           dec.has_free_slot()) {
      const BatchRequest& r = requests[waiting[next]];
      dec.start(int64_t(waiting[next++]), r.prompt, r.opt, r.on_text);
    }
    for (auto& [id, res] : dec.step()) results[size_t(id)] = std::move(res), ++done;
  }
  if (stats) *stats = dec.stats();
  return results;
}

}  // namespace lamina
