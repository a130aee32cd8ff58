// Continuous batching: many requests generated at once through Model::forward_slots, each in its
// own slot of one SlotKVCache, every decode step one batched forward over all running sequences
// (the weights read once per step for all of them); a waiting request takes a free slot between
// steps, its prompt computed in the same pass as the others' next tokens. The engine `lamina
// serve` puts behind its HTTP endpoints; batching does not change a request's tokens (each
// sequence attends only to itself, and its rows' products are its own).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "generate/generate.h"

namespace lamina {

struct BatchRequest {
  std::vector<int32_t> prompt;
  GenerateOptions opt;
  std::function<void(const std::string&)> on_text;  // text increments, as generate() streams
  int64_t arrival = 0;  // the engine step at which the request arrives (0: at once)
};

struct BatchStats {
  int64_t steps = 0;            // batched forward passes
  int64_t max_running = 0;      // most sequences in one pass
  int64_t tokens_computed = 0;  // rows over all passes (prompts and decoded tokens)
  int64_t prefix_reused = 0;    // prompt tokens whose keys and values a slot already held
};

// Runs every request to its end with at most `slots` sequences at a time, each of at most
// slot_capacity positions (prompt and generated tokens); requests are admitted in order of
// arrival (then of index) as slots free up, each into the free slot whose cache keeps the longest
// prefix of its prompt (those positions are not computed again). Results in the requests' order.
// Error, before any work, when a prompt is empty or does not fit its slot.
std::vector<GenerateResult> generate_batch(const Model& model, const Tokenizer& tok,
                                           const std::vector<BatchRequest>& requests, int64_t slots,
                                           int64_t slot_capacity, BatchStats* stats = nullptr);

}  // namespace lamina
