#include "generate/serve_engine.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace lamina {

ServeEngine::ServeEngine(const Model& model, const Tokenizer& tok, int64_t slots,
                         int64_t slot_capacity, int64_t max_queue)
    : dec_(model, tok, slots, slot_capacity),
      slot_capacity_(dec_.slot_capacity()),
      max_queue_(max_queue) {
  m_.slots = slots;
  thread_ = std::thread([this] { loop(); });
}

ServeEngine::~ServeEngine() {
  shutdown(false);
}

int64_t ServeEngine::submit(ServeRequest r) {
  dec_.check_prompt(r.prompt);  // const, reads only the capacity: safe beside the engine thread
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || int64_t(queue_.size()) >= max_queue_) {
    ++m_.rejected;
    return -1;
  }
  const int64_t id = next_id_++;
  ++m_.requests;
  m_.prompt_tokens += int64_t(r.prompt.size());
  queue_.emplace_back(id, std::move(r));
  wake_.notify_one();
  return id;
}

void ServeEngine::cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  cancel_.insert(id);
  wake_.notify_one();
}

ServeMetrics ServeEngine::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  ServeMetrics m = m_;
  m.queued = int64_t(queue_.size());
  return m;
}

void ServeEngine::shutdown(bool finish_running) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) return;
    stopping_ = true;
    finish_running_ = finish_running;
    wake_.notify_one();
  }
  thread_.join();
}

void ServeEngine::loop() {
  for (;;) {
    std::vector<std::pair<int64_t, ServeRequest>> refused;  // cancelled while queued
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stopping_ || !queue_.empty() || !cancel_.empty() || dec_.running() > 0;
      });
      if (stopping_ && !finish_running_) {  // everything queued or running ends now
        for (auto& q : queue_) cancel_.insert(q.first);
      }
      // Cancellations: queued requests leave the queue, running ones end at this step.
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (cancel_.count(it->first)) {
          cancel_.erase(it->first);
          refused.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      for (int64_t id : cancel_) dec_.cancel(id);
      cancel_.clear();
      if (stopping_ && !finish_running_) dec_.cancel_all();
      // Newcomers take the free slots.
      while (!queue_.empty() && dec_.has_free_slot()) {
        auto [id, r] = std::move(queue_.front());
        queue_.pop_front();
        done_cb_.emplace_back(id, std::move(r.on_done));
        dec_.start(id, r.prompt, r.opt, std::move(r.on_text));
      }
      m_.running = dec_.running();
      if (stopping_ && queue_.empty() && dec_.running() == 0 && refused.empty()) return;
    }
    for (auto& [id, r] : refused) {
      GenerateResult res;
      res.prompt_tokens = int64_t(r.prompt.size());
      res.stop_reason = "cancelled";
      if (r.on_done) r.on_done(res);
      std::lock_guard<std::mutex> lock(mu_);
      ++m_.cancelled;
    }
    // One pass, outside the lock: submit() and cancel() stay quick meanwhile. A pass that fails
    // (out of memory, a kernel's error) ends every running request with stop reason "error"
    // instead of ending the process; the engine goes on with the next requests.
    std::vector<std::pair<int64_t, GenerateResult>> ended;
    try {
      ended = dec_.step();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lamina: serve engine: %s (the running requests end with an error)\n",
                   e.what());
      dec_.cancel_all();
      ended = dec_.step();  // only ends the cancelled sequences: no pass runs
      for (auto& [id, res] : ended) res.stop_reason = "error";
    }
    std::vector<std::pair<std::function<void(const GenerateResult&)>, GenerateResult>> calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      m_.steps = dec_.stats().steps;
      m_.prefix_reused = dec_.stats().prefix_reused;
      m_.running = dec_.running();
      for (auto& [id, res] : ended) {
        m_.generated_tokens += int64_t(res.ids.size());
        ++(res.stop_reason == "cancelled" || res.stop_reason == "error" ? m_.cancelled
                                                                        : m_.completed);
        auto it = std::find_if(done_cb_.begin(), done_cb_.end(),
                               [id = id](auto& d) { return d.first == id; });
        if (it == done_cb_.end()) continue;
        calls.emplace_back(std::move(it->second), std::move(res));
        done_cb_.erase(it);
      }
    }
    for (auto& [cb, res] : calls)  // unlocked: a callback may submit or cancel
      if (cb) cb(res);
  }
}

}  // namespace lamina
