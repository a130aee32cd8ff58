#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "generate/generate.h"
#include "generate/sampler.h"
#include "test_util.h"
#include "tokenizer/default_tokenizer.h"

using namespace lamina;
using lamina::test::TempDir;

TEST(Sampler, GreedyIsArgmax) {
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 2.9f};
  Sampler s({});
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> l = {0.1f, 3.0f, -1.0f, 2.9f};
    SamplingParams p;
    p.temperature = 2.0f;
    p.seed = uint64_t(trial);
    p.top_k = 1;
    EXPECT_EQ(Sampler(p).sample(l.data(), 4, {}), 1);
    p.top_k = 0;
    p.top_p = 0.01f;
    EXPECT_EQ(Sampler(p).sample(l.data(), 4, {}), 1);
  }
}

TEST(Sampler, FrequenciesFollowSoftmaxAndTopK) {
  const std::vector<float> base = {0.0f, 1.0f, 2.0f, -5.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  Sampler s(p);
  std::vector<int> count(4);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = base;
    count[size_t(s.sample(l.data(), 4, {}))]++;
  }
  double z = 0;
  for (float v : base) z += std::exp(v);
  for (int i = 0; i < 4; ++i) {
    double pr = std::exp(base[size_t(i)]) / z, sd = std::sqrt(pr * (1 - pr) / n);
    EXPECT_NEAR(count[size_t(i)] / double(n), pr, 5 * sd + 1e-4) << i;
  }
  p.top_k = 2;  // only ids 2 and 1 remain
  Sampler s2(p);
  for (int i = 0; i < 200; ++i) {
    auto l = base;
    int id = s2.sample(l.data(), 4, {});
    EXPECT_TRUE(id == 1 || id == 2);
  }
}

TEST(Sampler, SameSeedSameSamples) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l1 = {0, 0.5f, 1, 0.2f}, l2 = l1;
    EXPECT_EQ(a.sample(l1.data(), 4, {}), b.sample(l2.data(), 4, {}));
  }
}

TEST(Sampler, RepetitionPenaltyFollowsTransformers) {
  // Positive logits are divided by the penalty, negative ones multiplied.
  std::vector<float> l = {2.0f, 1.9f, -1.0f};
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), 3, {0, 2}), 1);
  EXPECT_FLOAT_EQ(l[0], 2.0f / 1.5f);
  EXPECT_FLOAT_EQ(l[2], -1.5f);
  EXPECT_THROW(Sampler({0.0f, 0, 1.5f}), Error);  // top_p out of range
}

TEST(Generate, StopStringCutsAndMaxTokensBounds) {
  TempDir d;
  test::write_tiny_model(d.path, "tiny", {{"vocab_size", 400}});
  train_default_tokenizer(d / "tokenizer.model", 400);
  auto m = Model::load(d.path);
  auto tok = Tokenizer::load(d.path);
  auto prompt = tok.encode("The river", true);
  GenerateOptions o;
  o.max_new_tokens = 12;
  KVCache c = m->new_cache(64);
  std::string streamed;
  auto r = generate(*m, tok, prompt, o, c, [&](const std::string& s, auto) { streamed += s; });
  EXPECT_LE(r.ids.size(), 12u);
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.text, tok.decode(r.ids));
  if (r.text.size() >= 3) {
    // Stop at a string that the same greedy run produces: the output ends just before it.
    GenerateOptions o2 = o;
    o2.stop_strings = {r.text.substr(2, 1)};
    KVCache c2 = m->new_cache(64);
    std::string streamed2;
    auto r2 =
        generate(*m, tok, prompt, o2, c2, [&](const std::string& s, auto) { streamed2 += s; });
    EXPECT_EQ(r2.stop_reason, "stop_string");
    EXPECT_EQ(r2.text, r.text.substr(0, r.text.find(o2.stop_strings[0])));
    EXPECT_EQ(streamed2, r2.text);
  }
  // With logprobs, each token's comes once, with the piece that makes its text whole: the tokens
  // passed so far always spell a prefix of the text passed so far, and all of them together are
  // the result's (also where a stop string holds text back and then cuts it).
  for (const bool stop : {false, true}) {
    GenerateOptions ol = o;
    ol.top_logprobs = 2;
    if (stop && r.text.size() >= 3) ol.stop_strings = {r.text.substr(2, 1)};
    KVCache cl = m->new_cache(64);
    std::string text;
    std::vector<TokenLogprob> passed;
    bool prefix_ok = true;
    auto rl = generate(*m, tok, prompt, ol, cl, [&](const std::string& s, auto lp) {
      text += s;
      passed.insert(passed.end(), lp.begin(), lp.end());
      std::vector<int32_t> ids;
      for (auto& t : passed) ids.push_back(t.id);
      if (!stop) prefix_ok = prefix_ok && text.starts_with(tok.decode(ids));
    });
    EXPECT_TRUE(prefix_ok);
    EXPECT_EQ(text, rl.text);
    ASSERT_EQ(passed.size(), rl.logprobs.size());
    ASSERT_EQ(passed.size(), rl.ids.size());
    for (size_t i = 0; i < passed.size(); ++i) {
      EXPECT_EQ(passed[i].id, rl.ids[i]);
      EXPECT_EQ(passed[i].logprob, rl.logprobs[i].logprob);
      EXPECT_EQ(passed[i].top, rl.logprobs[i].top);
    }
  }
  // Reusing the cache prefix for a longer prompt gives the same tokens as a fresh cache.
  KVCache c3 = m->new_cache(64);
  auto r3 = generate(*m, tok, prompt, o, c3);
  std::vector<int32_t> cached = prompt;
  cached.insert(cached.end(), r3.ids.begin(), r3.ids.end());
  auto longer = cached;
  longer.push_back(5);
  reuse_cache_prefix(c3, cached, longer);
  EXPECT_EQ(c3.len, int64_t(prompt.size() + r3.ids.size()) - 1);  // last sampled token never ran
  auto r4 = generate(*m, tok, longer, o, c3);
  KVCache c4 = m->new_cache(64);
  auto r5 = generate(*m, tok, longer, o, c4);
  EXPECT_EQ(r4.ids, r5.ids);
  EXPECT_THROW(generate(*m, tok, {}, o, c4), Error);
}

// transformers' MinPLogitsWarper: after temperature, tokens whose probability is below min_p times
// the most likely one's are never drawn; those above keep their softmax ratios.
TEST(Sampler, MinPDropsTokensBelowTheScaledTop) {
  const std::vector<float> base = {2.0f, 1.5f, 0.0f, -1.0f};  // probs ~ .55 .33 .07 .03 (T = 1)
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.2f;  // floor .11: ids 2 and 3 drop
  p.seed = 3;
  Sampler s(p);
  std::vector<int> count(4);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = base;
    count[size_t(s.sample(l.data(), 4, {}))]++;
  }
  EXPECT_EQ(count[2] + count[3], 0);
  const double p0 = 1 / (1 + std::exp(-0.5)), sd = std::sqrt(p0 * (1 - p0) / n);
  EXPECT_NEAR(count[0] / double(n), p0, 5 * sd);
  EXPECT_THROW(Sampler({1.0f, 0, 1.0f, 1.0f, 0.0f, 0.0f, 1.5f}), Error);  // min_p > 1
}

// OpenAI's presence / frequency penalties over the sampler's own output: logit -= f · count +
// p · (count > 0); the prompt (history) does not count.
TEST(Sampler, PresenceAndFrequencyPenaltiesCountTheCompletion) {
  SamplingParams p;
  p.frequency_penalty = 0.4f;
  p.presence_penalty = 0.25f;
  Sampler s(p);
  std::vector<float> l = {1.0f, 0.5f, 0.0f};
  EXPECT_EQ(s.sample(l.data(), 3, {1, 1, 1}), 0);  // the prompt's 1s are not penalised
  EXPECT_FLOAT_EQ(l[1], 0.5f);
  l = {1.0f, 0.5f, 0.0f};
  EXPECT_EQ(s.sample(l.data(), 3, {}), 1);  // 0 once: 1 - 0.4 - 0.25 = 0.35 < 0.5
  EXPECT_FLOAT_EQ(l[0], 0.35f);
  l = {1.0f, 0.5f, 0.0f};
  s.sample(l.data(), 3, {});
  EXPECT_FLOAT_EQ(l[0], 0.35f);
  EXPECT_FLOAT_EQ(l[1], -0.15f);
  EXPECT_THROW(Sampler({0.0f, 0, 1.0f, 1.0f, 2.5f}), Error);  // presence > 2
}
