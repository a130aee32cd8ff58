// Continuous batching (generate/batch_generate.h, Model::forward_slots): several sequences in one
// pass give each the logits it gets alone, and generate_batch's results equal generate() run on
// each request by itself — greedy and sampled, staggered arrivals, more requests than slots, stop
// strings, context limits, dense and MoE models, F32 and Q8_0 weights.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "generate/batch_generate.h"
#include "test_util.h"
#include "tokenizer/default_tokenizer.h"

namespace lamina {
namespace {

using test::TempDir;

// Three sequences: prefilled together in one pass, then decoded together, one sequence leaving and
// another joining; each one's logits equal its own forward() with its own cache.
void expect_slots_match_forward(const std::string& dir, const LoadOptions& lo = {}) {
  auto m = Model::load(dir, lo);
  const int64_t V = m->config().vocab_size;
  std::mt19937 g(7);
  std::vector<std::vector<int32_t>> seqs = {std::vector<int32_t>(9), std::vector<int32_t>(4),
                                            std::vector<int32_t>(13)};
  for (auto& s : seqs)
    for (auto& x : s) x = int32_t(g() % uint32_t(V));
  SlotKVCache sc = m->new_slot_cache(3, 32);
  std::vector<KVCache> own;
  for (int i = 0; i < 3; ++i) own.push_back(m->new_cache(32));
  std::vector<float> batched(static_cast<size_t>(3 * V)), alone(static_cast<size_t>(V));
  auto compare = [&](const std::vector<Model::SlotStep>& steps, const char* what) {
    m->forward_slots(steps, sc, batched.data());
    for (size_t i = 0; i < steps.size(); ++i) {
      m->forward(steps[i].tokens, steps[i].n, own[size_t(steps[i].slot)], alone.data(), false);
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(batched[i * size_t(V) + size_t(v)], alone[size_t(v)], 1e-4)
            << what << " step " << i << " token " << v;
      EXPECT_EQ(sc.len[size_t(steps[i].slot)], own[size_t(steps[i].slot)].len);
    }
  };
  // Slots 2 and 0 prefill (out of slot order); slot 1 waits.
  compare({{seqs[2].data(), 13, 2}, {seqs[0].data(), 9, 0}}, "prefill");
  const int32_t a = 5, b = 17, c = 3;
  compare({{&a, 1, 0}, {&b, 1, 2}}, "decode");
  // Slot 1 joins with its prompt while the others decode.
  compare({{&c, 1, 2}, {seqs[1].data(), 4, 1}, {&b, 1, 0}}, "join");
  compare({{&a, 1, 1}}, "one");
  // A slot given twice, or running past its capacity, is an error.
  EXPECT_THROW(m->forward_slots({{&a, 1, 0}, {&b, 1, 0}}, sc, batched.data()), Error);
  std::vector<int32_t> many(40, 1);
  EXPECT_THROW(m->forward_slots({{many.data(), 40, 1}}, sc, batched.data()), Error);
}

TEST(BatchGenerate, SlotsGiveEachSequenceItsOwnLogits) {
  for (const std::string shape : {"tiny", "tiny-mistral", "tiny-mixtral", "tiny-qwen3"}) {
    TempDir d;
    test::write_tiny_model(d.path, shape);
    SCOPED_TRACE(shape);
    expect_slots_match_forward(d.path);
  }
}

TEST(BatchGenerate, ResultsEqualGenerateOnEachRequestAlone) {
  TempDir d;
  test::write_tiny_model(d.path, "tiny", {{"vocab_size", 400}});
  train_default_tokenizer(d / "tokenizer.model", 400);
  auto tok = Tokenizer::load(d.path);
  for (const char* dtype : {"f32", "q8_0"}) {
    LoadOptions lo;
    lo.dtype = parse_dtype(dtype, "dtype", true);
    auto m = Model::load(d.path, lo);
    std::vector<BatchRequest> reqs;
    const char* prompts[] = {"The river",        "A quiet morning in the", "Once",
                             "Stones and water", "The river runs",         "Light"};
    for (int i = 0; i < 6; ++i) {
      BatchRequest r;
      r.prompt = tok.encode(prompts[i], true);
      r.opt.max_new_tokens = 6 + 3 * i;
      if (i % 2) {  // sampled, each with its own seed
        r.opt.sampling.temperature = 0.9f;
        r.opt.sampling.top_k = 20;
        r.opt.sampling.seed = uint64_t(100 + i);
      }
      r.arrival = i < 3 ? 0 : 2 * i;  // three at once, then staggered
      reqs.push_back(r);
    }
    // A stop string this request's own greedy run produces (generate() decides where it cuts).
    {
      KVCache c = m->new_cache(64);
      auto r0 = generate(*m, tok, reqs[0].prompt, reqs[0].opt, c);
      if (r0.text.size() > 3) reqs[0].opt.stop_strings = {r0.text.substr(3, 1)};
    }
    std::vector<std::string> streamed(reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i)
      reqs[i].on_text = [&streamed, i](const std::string& s, auto) { streamed[i] += s; };
    BatchStats st;
    const auto got = generate_batch(*m, tok, reqs, 3, 64, &st);
    ASSERT_EQ(got.size(), reqs.size());
    EXPECT_EQ(st.max_running, 3);  // more requests than slots: some waited
    for (size_t i = 0; i < reqs.size(); ++i) {
      KVCache c = m->new_cache(64);
      const auto want = generate(*m, tok, reqs[i].prompt, reqs[i].opt, c);
      EXPECT_EQ(got[i].ids, want.ids) << dtype << " request " << i;
      EXPECT_EQ(got[i].text, want.text) << dtype << " request " << i;
      EXPECT_EQ(got[i].stop_reason, want.stop_reason) << dtype << " request " << i;
      EXPECT_EQ(streamed[i], got[i].text) << dtype << " request " << i;
    }
    // A slot of 20 positions: the request ends with "context", as generate() with that cache.
    BatchRequest small = reqs[1];
    small.opt.max_new_tokens = 50;
    small.arrival = 0;
    small.on_text = {};
    const auto ctx = generate_batch(*m, tok, {small}, 1, 20);
    KVCache c20 = m->new_cache(20);
    const auto want = generate(*m, tok, small.prompt, small.opt, c20);
    EXPECT_EQ(ctx[0].stop_reason, "context");
    EXPECT_EQ(ctx[0].ids, want.ids);
    // Two requests sharing a prefix through one slot, one after the other: the second reuses
    // the first's keys and values for that prefix, and still equals generate() alone.
    {
      BatchRequest first = reqs[4], second = reqs[4];  // "The river runs"
      first.on_text = second.on_text = {};
      first.opt.max_new_tokens = 4;
      second.prompt.insert(second.prompt.end(), {7, 8, 9});
      first.arrival = 0;
      second.arrival = 1;
      BatchStats ps;
      const auto pr = generate_batch(*m, tok, {first, second}, 1, 64, &ps);
      EXPECT_EQ(ps.prefix_reused, int64_t(first.prompt.size()));
      KVCache c2 = m->new_cache(64);
      EXPECT_EQ(pr[1].ids, generate(*m, tok, second.prompt, second.opt, c2).ids) << dtype;
    }
    // A prompt longer than a slot, or empty, is an error before any work.
    EXPECT_THROW(generate_batch(*m, tok, {small}, 1, 2), Error);
    BatchRequest empty;
    EXPECT_THROW(generate_batch(*m, tok, {empty}, 1, 12), Error);
  }
}

}  // namespace
}  // namespace lamina
