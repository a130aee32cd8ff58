// Gradients and optimizer moments for trainable tensors only (ParamStore::compact_grads): the
// trainable tensors' gradients are those of the full layout, frozen ones get no storage, and a
// training step runs through frozen norms, embedding and matrices (Mixtral router included).
#include <gtest/gtest.h>

#include <random>

#include "test_util.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

using namespace lamina;

namespace {

Batch random_batch(int64_t T) {
  std::mt19937 rng(3);
  Batch b;
  b.B = 1, b.T = T;
  for (int64_t i = 0; i < T; ++i) {
    b.tokens.push_back(int32_t(rng() % 500));
    b.targets.push_back(int32_t(rng() % 500));
    b.weights.push_back(1.f);
  }
  return b;
}

void check_compaction(const std::string& shape) {
  test::TempDir d;
  test::write_tiny_model(d.path, shape);
  const Batch b = random_batch(12);
  // Reference: the full layout, every tensor with a gradient.
  ParamStore full = ParamStore::load(d.path);
  TrainGraph gf(full);
  full.zero_grads();
  gf.step(b, 12.0, 0.01);
  // Layer 0, the embedding / LM head and the final norm frozen, then compacted.
  ParamStore p = ParamStore::load(d.path);
  p.freeze({0}, true);
  p.compact_grads();
  EXPECT_EQ(int64_t(p.gtotal), p.num_trainable()) << shape;
  EXPECT_LT(p.gtotal, p.total);
  TrainGraph g(p);
  p.zero_grads();
  g.step(b, 12.0, 0.01);
  size_t frozen = 0;
  for (size_t i = 0; i < p.specs.size(); ++i) {
    if (!p.has_grad(i)) {
      ++frozen;
      continue;
    }
    for (int64_t k = 0; k < p.numel(i); ++k)
      ASSERT_FLOAT_EQ(p.grad(i)[k], full.grad(i)[k]) << shape << " " << p.specs[i].name;
  }
  EXPECT_GT(frozen, 0u);
  AdamW opt(p, {});
  EXPECT_EQ(opt.exp_avg().numel(), int64_t(p.gtotal));
  ASSERT_TRUE(opt.update(1e-3));  // touches trainable tensors only, through the compacted offsets
}

}  // namespace

TEST(ParamStore, CompactGradsLlama) {
  check_compaction("tiny");
}
TEST(ParamStore, CompactGradsMixtral) {
  check_compaction("tiny-mixtral");
}
