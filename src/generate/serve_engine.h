// The engine a server runs requests through: a thread that drives a BatchDecoder (continuous
// batching over `slots` sequences), fed by a bounded queue that any thread submits to. Requests
// join the running batch between steps; a cancelled request (its client gone) frees its slot at
// the next step; a full queue refuses new requests at once (a server answers 429). Callbacks run
// on the engine's thread and must not block.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "generate/batch_generate.h"

namespace lamina {

struct ServeRequest {
  std::vector<int32_t> prompt;
  GenerateOptions opt;
  TextCallback on_text;                                // text increments as they become final
  std::function<void(const GenerateResult&)> on_done;  // once, at the end (also when cancelled)
};

struct ServeMetrics {
  int64_t requests = 0, rejected = 0, completed = 0, cancelled = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0, prefix_reused = 0;
  int64_t queued = 0, running = 0, slots = 0, steps = 0;
};

class ServeEngine {
 public:
  ServeEngine(const Model& model, const Tokenizer& tok, int64_t slots, int64_t slot_capacity,
              int64_t max_queue);
  ~ServeEngine();  // shutdown(false)
  ServeEngine(const ServeEngine&) = delete;
  ServeEngine& operator=(const ServeEngine&) = delete;

  // Queues a request and returns its id, or -1 when the queue is full or the engine is shutting
  // down. Error (before queueing) when the prompt cannot run in a slot.
  int64_t submit(ServeRequest r);
  // Ends a queued or running request (on_done gets stop reason "cancelled").
  void cancel(int64_t id);
  ServeMetrics metrics() const;
  int64_t slot_capacity() const { return slot_capacity_; }
  // Stops taking requests; finish_running: lets queued and running ones end normally, else
  // cancels them. Returns when the engine thread has stopped.
  void shutdown(bool finish_running);

 private:
  void loop();
  BatchDecoder dec_;
  int64_t slot_capacity_, max_queue_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::pair<int64_t, ServeRequest>> queue_;
  std::set<int64_t> cancel_;  // ids to cancel at the next step
  std::vector<std::pair<int64_t, std::function<void(const GenerateResult&)>>> done_cb_;
  ServeMetrics m_;
  int64_t next_id_ = 0;
  bool stopping_ = false, finish_running_ = true;
  std::thread thread_;
};

}  // namespace lamina
