// The serving engine (generate/serve_engine.h): many client threads submitting at once get each
// its own generate() result through one continuously batched engine; cancellation mid-stream ends
// a request with a prefix of its tokens and frees its slot; a full queue refuses at once; shutdown
// either finishes or cancels what is in flight, and returns.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "core/error.h"
#include "generate/serve_engine.h"
#include "test_util.h"
#include "tokenizer/default_tokenizer.h"

namespace lamina {
namespace {

using test::TempDir;

struct Fixture {
  TempDir d;
  std::unique_ptr<Model> m;
  Tokenizer tok;
  Fixture() {
    test::write_tiny_model(d.path, "tiny", {{"vocab_size", 400}});
    train_default_tokenizer(d / "tokenizer.model", 400);
    tok = Tokenizer::load(d.path);
    m = Model::load(d.path);
  }
  GenerateResult alone(const ServeRequest& r) {
    KVCache c = m->new_cache(64);
    return generate(*m, tok, r.prompt, r.opt, c);
  }
};

ServeRequest request(const Tokenizer& tok, int i) {
  const char* words[] = {"The river", "A quiet morning", "Once upon", "Stones", "Light on water"};
  ServeRequest r;
  r.prompt = tok.encode(words[i % 5], true);
  r.prompt.push_back(int32_t(10 + i));  // every prompt its own
  r.opt.max_new_tokens = 5 + i % 7;
  if (i % 3 == 1) {
    r.opt.sampling.temperature = 0.8f;
    r.opt.sampling.seed = uint64_t(i);
  }
  return r;
}

TEST(ServeEngine, ConcurrentClientsGetTheirOwnResultsAndCancellationsEndEarly) {
  Fixture f;
  constexpr int kClients = 8, kEach = 3;
  // What each request gives alone, computed first: a Model runs one pass at a time (the
  // engine's thread is its only user while it serves).
  std::vector<GenerateResult> wants;
  for (int i = 0; i < kClients * kEach; ++i) {
    ServeRequest r = request(f.tok, i);
    if (i % 5 == 4) r.opt.max_new_tokens = 40;
    wants.push_back(f.alone(r));
  }
  ServeEngine eng(*f.m, f.tok, 4, 64, 64);
  std::vector<std::thread> clients;
  std::vector<std::string> failures(kClients);
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      for (int k = 0; k < kEach; ++k) {
        const int i = c * kEach + k;
        ServeRequest r = request(f.tok, i);
        const bool cancel = i % 5 == 4;  // some clients go away after their first text
        if (cancel) r.opt.max_new_tokens = 40;
        std::promise<GenerateResult> done;
        std::string streamed;
        std::atomic<int64_t> id{-1};
        std::atomic<bool> asked{false};
        r.on_text = [&](const std::string& s, auto) {
          streamed += s;
          if (cancel && !asked.exchange(true)) {
            while (id < 0) std::this_thread::yield();
            eng.cancel(id);
          }
        };
        r.on_done = [&](const GenerateResult& res) { done.set_value(res); };
        id = eng.submit(std::move(r));
        if (id < 0) {
          failures[size_t(c)] += " request " + std::to_string(i) + " refused;";
          continue;
        }
        const GenerateResult got = done.get_future().get();
        const GenerateResult& want = wants[size_t(i)];
        if (cancel && asked) {  // ended early, with a prefix of the tokens it would have made
          if (got.stop_reason != "cancelled" || got.ids.size() >= want.ids.size() ||
              !std::equal(got.ids.begin(), got.ids.end(), want.ids.begin()))
            failures[size_t(c)] += " cancelled request " + std::to_string(i) + " wrong;";
        } else if (got.ids != want.ids || got.text != want.text ||
                   got.stop_reason != want.stop_reason || streamed != got.text) {
          failures[size_t(c)] += " request " + std::to_string(i) + " differs;";
        }
      }
    });
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(failures[size_t(c)], "") << "client " << c;
  const ServeMetrics mt = eng.metrics();
  EXPECT_EQ(mt.requests, kClients * kEach);
  EXPECT_EQ(mt.completed + mt.cancelled, kClients * kEach);
  EXPECT_GT(mt.cancelled, 0);
  EXPECT_EQ(mt.queued, 0);
  EXPECT_EQ(mt.running, 0);
}

TEST(ServeEngine, AFullQueueRefusesAndShutdownEndsWhatIsInFlight) {
  Fixture f;
  const GenerateResult want_b = f.alone(request(f.tok, 1));
  for (bool finish : {true, false}) {
    ServeEngine eng(*f.m, f.tok, 1, 64, 1);
    std::promise<void> first_text;
    std::atomic<bool> said{false};
    std::vector<std::promise<GenerateResult>> done(2);
    ServeRequest a = request(f.tok, 0);
    a.opt.max_new_tokens = 40;
    // a's first text holds the engine (its thread runs the callback) until b and c were
    // submitted: a keeps the only slot however the threads are scheduled.
    std::promise<void> go;
    std::shared_future<void> gone = go.get_future().share();
    a.on_text = [&, gone](const std::string&, auto) {
      if (!said.exchange(true)) {
        first_text.set_value();
        gone.wait();
      }
    };
    a.on_done = [&](const GenerateResult& r) { done[0].set_value(r); };
    ASSERT_GE(eng.submit(std::move(a)), 0);
    first_text.get_future().wait();  // a holds the only slot
    ServeRequest b = request(f.tok, 1);
    b.on_done = [&](const GenerateResult& r) { done[1].set_value(r); };
    EXPECT_GE(eng.submit(std::move(b)), 0);        // queued
    EXPECT_EQ(eng.submit(request(f.tok, 2)), -1);  // the queue (1) is full
    EXPECT_EQ(eng.metrics().rejected, 1);
    go.set_value();
    eng.shutdown(finish);
    const GenerateResult ra = done[0].get_future().get(), rb = done[1].get_future().get();
    if (finish) {
      EXPECT_NE(ra.stop_reason, "cancelled");
      EXPECT_EQ(rb.ids, want_b.ids);
    } else {
      EXPECT_EQ(ra.stop_reason, "cancelled");
      EXPECT_EQ(rb.stop_reason, "cancelled");
      EXPECT_TRUE(rb.ids.empty());
    }
    EXPECT_EQ(eng.submit(request(f.tok, 3)), -1);  // no longer taking requests
  }
  // A prompt that cannot fit a slot is an error at submission.
  ServeEngine small(*f.m, f.tok, 1, 4, 4);
  EXPECT_THROW(small.submit(request(f.tok, 1)), Error);
}

}  // namespace
}  // namespace lamina
