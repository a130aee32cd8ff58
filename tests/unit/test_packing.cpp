// Packing must not leak attention: two sequences packed in one row (block-diagonal causal mask,
// positions restarting) give the loss and gradients of the two run separately.
#include <gtest/gtest.h>

#include <random>

#include "test_util.h"
#include "train/train_graph.h"

using namespace lamina;
using lamina::test::TempDir;

namespace {

Batch one_row(const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt,
              const std::vector<float>& w) {
  Batch b;
  b.B = 1;
  b.T = int64_t(tok.size());
  b.tokens = tok, b.targets = tgt, b.weights = w;
  return b;
}

void check_packing(const std::string& shape, const nlohmann::json& overrides) {
  TempDir d;
  test::write_tiny_model(d.path, shape, overrides);
  ParamStore p = ParamStore::load(d.path);
  TrainGraph g(p);
  std::mt19937 rng(1);
  auto ids = [&](int n) {
    std::vector<int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back(int32_t(rng() % 500));
    return v;
  };
  auto t1 = ids(5), y1 = ids(5), t2 = ids(7), y2 = ids(7);
  y1[0] = -1;  // an unscored position
  std::vector<float> w1 = {0, 1, 0.5f, 1, 1}, w2 = {1, 0.1f, 0.1f, 1, 1, 0.2f, 1};
  const double norm = 9.3;
  p.zero_grads();
  auto s1 = g.step(one_row(t1, y1, w1), norm, 0.0);
  auto s2 = g.step(one_row(t2, y2, w2), norm, 0.0);
  std::vector<float> separate(p.grads.f32(), p.grads.f32() + p.total);
  std::vector<int32_t> tk = t1, ty = y1;
  tk.insert(tk.end(), t2.begin(), t2.end());
  ty.insert(ty.end(), y2.begin(), y2.end());
  std::vector<float> tw = w1;
  tw.insert(tw.end(), w2.begin(), w2.end());
  Batch packed = one_row(tk, ty, tw);
  packed.segments = {{5, 7}};
  p.zero_grads();
  auto sp = g.step(packed, norm, 0.0);
  EXPECT_NEAR(sp.loss_sum, s1.loss_sum + s2.loss_sum, 1e-5);
  EXPECT_EQ(sp.tokens, s1.tokens + s2.tokens);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < p.total; ++i) {
    worst = std::max(worst, double(std::fabs(p.grads.f32()[i] - separate[i])));
    scale = std::max(scale, double(std::fabs(separate[i])));
  }
  EXPECT_LT(worst, 1e-5 * std::max(1.0, scale)) << shape;
  // Control: without the segment boundary the second sequence sees the first, and it shows.
  packed.segments.clear();
  p.zero_grads();
  auto leak = g.step(packed, norm, 0.0);
  EXPECT_GT(std::fabs(leak.loss_sum - sp.loss_sum), 1e-4);
}

}  // namespace

TEST(Packing, PackedEqualsSeparateLlama) {
  check_packing("tiny", {});
}
TEST(Packing, PackedEqualsSeparateMistralWindow) {
  check_packing("tiny-mistral", {{"sliding_window", 4}});
}
TEST(Packing, PackedEqualsSeparateMixtral) {
  check_packing("tiny-mixtral", {});
}
