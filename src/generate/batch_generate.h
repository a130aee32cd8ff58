// Continuous batching: many requests generated at once through Model::forward_slots, each in its
// own slot of one SlotKVCache, every decode step one batched forward over all running sequences
// (the weights read once per step for all of them); a waiting request takes a free slot between
// steps, its prompt computed in the same pass as the others' next tokens, in the slot whose cache
// keeps the longest prefix of it. Batching does not change a request's tokens: each sequence
// attends only to itself and its rows' products are its own.
//   BatchDecoder: the slots and one step at a time (what a server's engine thread drives).
//   generate_batch: a fixed list of requests with arrival steps, run to the end (tests, batch use).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "generate/generate.h"

namespace lamina {

struct BatchStats {
  int64_t steps = 0;            // batched forward passes
  int64_t max_running = 0;      // most sequences in one pass
  int64_t tokens_computed = 0;  // rows over all passes (prompts and decoded tokens)
  int64_t prefix_reused = 0;    // prompt tokens whose keys and values a slot already held
};

class BatchDecoder {
 public:
  BatchDecoder(const Model& model, const Tokenizer& tok, int64_t slots, int64_t slot_capacity);
  int64_t slots() const { return int64_t(slot_.size()); }
  int64_t running() const;
  bool has_free_slot() const { return running() < slots(); }
  int64_t slot_capacity() const { return cache_.slot_capacity; }
  // Error unless the prompt can run in a slot (not empty, at most slot_capacity tokens).
  void check_prompt(const std::vector<int32_t>& prompt) const;
  // Starts request `id` in the free slot keeping the longest prefix of its prompt (at least the
  // prompt's last token still runs). Requires a free slot.
  void start(int64_t id, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
             TextCallback on_text = {});
  // Ends request `id` before the next pass (stop reason "cancelled"); false if it is not running.
  bool cancel(int64_t id);
  void cancel_all();
  // One pass over every running sequence; the requests that ended in it, with their results.
  std::vector<std::pair<int64_t, GenerateResult>> step();
  const BatchStats& stats() const { return stats_; }

 private:
  struct Running {
    int64_t id;
    std::unique_ptr<Continuation> cont;
    std::vector<int32_t> feed;  // what the next pass runs for it: the prompt, then one token
    bool cancelled = false;
  };
  const Model& model_;
  const Tokenizer& tok_;
  SlotKVCache cache_;
  std::vector<std::unique_ptr<Running>> slot_;
  // What each slot's cache holds (positions [0, len)), kept after its request ends: a later
  // request sharing a prefix with it reuses those keys and values.
  std::vector<std::vector<int32_t>> held_;
  std::vector<float> logits_;
  BatchStats stats_;
};

struct BatchRequest {
  std::vector<int32_t> prompt;
  GenerateOptions opt;
  TextCallback on_text;  // text increments, as generate() streams
  int64_t arrival = 0;   // the engine step at which the request arrives (0: at once)
};

// Runs every request to its end with at most `slots` sequences at a time, each of at most
// slot_capacity positions (prompt and generated tokens); requests are admitted in order of
// arrival (then of index) as slots free up. Results in the requests' order. Error, before any
// work, when a prompt is empty or does not fit its slot.
std::vector<GenerateResult> generate_batch(const Model& model, const Tokenizer& tok,
                                           const std::vector<BatchRequest>& requests, int64_t slots,
                                           int64_t slot_capacity, BatchStats* stats = nullptr);

}  // namespace lamina
