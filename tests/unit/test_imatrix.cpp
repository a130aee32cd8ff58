// llama.cpp's importance-matrix files (io/imatrix_file.h) and lamina's computation of them
// (model/imatrix.h). The values themselves are checked against llama.cpp's own activations in
// tests/oracles/test_llamacpp.py; here: the formats round trip, bad files are one-line errors, and
// the collection covers every product with the right row counts.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/imatrix_file.h"
#include "model/imatrix.h"
#include "test_util.h"

namespace lamina {
namespace {

ImatrixData sample_data() {
  ImatrixData d;
  d.datasets = {"calib.txt"};
  d.chunk_count = 3;
  d.chunk_size = 8;
  ImatrixEntry dense;
  dense.cols = 4;
  dense.sum2 = {1.5, 24.0, 0.0, 3.25};
  dense.count = {24};
  d.entries["blk.0.attn_q.weight"] = dense;
  ImatrixEntry experts;  // three experts, the second never routed to
  experts.cols = 2;
  experts.sum2 = {2.0, 4.0, 0.0, 0.0, 9.0, 1.0};
  experts.count = {4, 0, 6};
  d.entries["blk.0.ffn_up_exps.weight"] = experts;
  ImatrixEntry unused;  // saw nothing at all (the legacy format leaves it out)
  unused.cols = 2;
  unused.sum2 = {0.0, 0.0};
  unused.count = {0};
  d.entries["blk.1.ffn_down.weight"] = unused;
  return d;
}

TEST(ImatrixFile, GgufRoundTripsAndGivesLlamaQuantizesMeans) {
  test::TempDir dir;
  const ImatrixData d = sample_data();
  write_imatrix(dir / "m.gguf", d, false);
  const ImatrixData r = read_imatrix(dir / "m.gguf");
  EXPECT_EQ(r.datasets, d.datasets);
  EXPECT_EQ(r.chunk_count, 3);
  EXPECT_EQ(r.chunk_size, 8);
  ASSERT_EQ(r.entries.size(), 3u);
  for (const auto& [name, e] : d.entries) {
    const ImatrixEntry& got = r.entries.at(name);
    EXPECT_EQ(got.cols, e.cols) << name;
    EXPECT_EQ(got.count, e.count) << name;
    EXPECT_EQ(got.sum2, e.sum2) << name;  // these sums are exact in F32
  }
  const ImportanceMatrix rows = importance_rows(r);
  EXPECT_EQ(rows.at("blk.0.attn_q.weight"),
            (std::vector<float>{1.5f / 24, 1.0f, 0.0f, 3.25f / 24}));
  // An expert without rows gets 1s, as llama-quantize fills it.
  EXPECT_EQ(rows.at("blk.0.ffn_up_exps.weight"),
            (std::vector<float>{0.5f, 1.0f, 1.0f, 1.0f, 1.5f, 1.0f / 6}));
  EXPECT_EQ(rows.at("blk.1.ffn_down.weight"), (std::vector<float>{1.0f, 1.0f}));
}

TEST(ImatrixFile, LegacyDatStoresMeanTimesChunksAndReadsBackTheSameMeans) {
  test::TempDir dir;
  const ImatrixData d = sample_data();
  write_imatrix(dir / "m.dat", d, true);
  const ImatrixData r = read_imatrix(dir / "m.dat");
  EXPECT_EQ(r.datasets, d.datasets);
  EXPECT_EQ(r.chunk_count, 3);
  EXPECT_EQ(r.entries.count("blk.1.ffn_down.weight"), 0u);  // no data: left out
  // ncall = ceil(most rows / chunk size): 24 / 8 = 3 for the dense one, ceil(6 / 8) = 1 for
  // experts.
  EXPECT_EQ(r.entries.at("blk.0.attn_q.weight").count, (std::vector<int64_t>{3}));
  EXPECT_EQ(r.entries.at("blk.0.ffn_up_exps.weight").count, (std::vector<int64_t>{1}));
  const ImportanceMatrix a = importance_rows(d), b = importance_rows(r);
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_up_exps.weight"}) {
    ASSERT_EQ(a.at(name).size(), b.at(name).size());
    for (size_t i = 0; i < a.at(name).size(); ++i)
      EXPECT_NEAR(a.at(name)[i], b.at(name)[i], 1e-6f * std::fabs(a.at(name)[i])) << name << i;
  }
}

TEST(ImatrixFile, EveryTruncationAndNonFiniteValueIsAnError) {
  test::TempDir dir;
  ImatrixData d = sample_data();
  for (bool legacy : {false, true}) {
    const std::string path = dir / (legacy ? "m.dat" : "m.gguf");
    write_imatrix(path, d, legacy);
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    // Every cut is an error naming the file, except the legacy file's end of entries (the trailer
    // of chunk count and dataset name is optional) and GGUF's padding after the last tensor.
    const size_t legacy_trailer = bytes.size() - 8 - d.datasets[0].size();
    for (size_t n = 0; n < bytes.size(); ++n) {
      if (legacy ? n == legacy_trailer : n + 32 > bytes.size()) continue;
      std::ofstream(dir / "cut", std::ios::binary).write(bytes.data(), std::streamsize(n));
      try {
        read_imatrix(dir / "cut");
        ADD_FAILURE() << (legacy ? "dat" : "gguf") << " cut at " << n << " of " << bytes.size();
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(dir / "cut"), std::string::npos) << e.what();
      }
    }
  }
  d.entries["blk.0.attn_q.weight"].sum2[1] = NAN;
  write_imatrix(dir / "nan.gguf", d, false);
  EXPECT_THROW(read_imatrix(dir / "nan.gguf"), Error);
}

// Every product of every layer is collected once per token (experts: per token routed to them),
// under llama.cpp's names; the three attention projections share their input.
TEST(Imatrix, CollectsEveryProductOncePerToken) {
  for (const std::string shape : {"tiny", "tiny-mixtral"}) {
    test::TempDir dir;
    const ModelConfig cfg = test::write_tiny_model(dir.path, shape);
    auto model = Model::load(dir.path);
    std::vector<int32_t> tokens(70);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 3) % 50 + 3);
    ImatrixOptions opt;
    opt.n_ctx = 16;
    opt.bos_id = 1;
    opt.process_output = true;
    const ImatrixResult r = compute_imatrix(*model, tokens, opt);
    const int64_t rows = 4 * 16;  // 70 tokens: 4 whole chunks
    EXPECT_EQ(r.chunks, 4);
    EXPECT_EQ(r.data.chunk_count, 4);
    EXPECT_GT(r.perplexity, 1.0);
    std::set<std::string> want;
    const bool moe = cfg.num_local_experts > 0;
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"})
        want.insert(b + n + ".weight");
      if (moe) {
        for (const char* n : {"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"})
          want.insert(b + n + ".weight");
      } else {
        for (const char* n : {"ffn_gate", "ffn_up", "ffn_down"}) want.insert(b + n + ".weight");
      }
      const ImatrixEntry& q = r.data.entries.at(b + "attn_q.weight");
      EXPECT_EQ(q.sum2, r.data.entries.at(b + "attn_k.weight").sum2);
      EXPECT_EQ(q.sum2, r.data.entries.at(b + "attn_v.weight").sum2);
      EXPECT_EQ(q.count, std::vector<int64_t>{rows});
      if (moe) {
        const ImatrixEntry& up = r.data.entries.at(b + "ffn_up_exps.weight");
        int64_t routed = 0;
        for (int64_t c : up.count) routed += c;
        EXPECT_EQ(int64_t(up.count.size()), cfg.num_local_experts);
        EXPECT_EQ(routed, rows * cfg.num_experts_per_tok);
        EXPECT_EQ(up.count, r.data.entries.at(b + "ffn_down_exps.weight").count);
        EXPECT_EQ(r.data.entries.at(b + "ffn_gate_inp.weight").count, std::vector<int64_t>{rows});
      }
    }
    if (!cfg.tie_word_embeddings) want.insert("output.weight");
    std::set<std::string> got;
    for (const auto& kv : r.data.entries) got.insert(kv.first);
    EXPECT_EQ(got, want) << shape;
    for (const auto& [name, e] : r.data.entries)
      for (double v : e.sum2) ASSERT_TRUE(std::isfinite(v) && v >= 0) << name;
  }
}

TEST(Imatrix, TooFewTokensIsAnError) {
  test::TempDir dir;
  test::write_tiny_model(dir.path, "tiny");
  auto model = Model::load(dir.path);
  std::vector<int32_t> tokens(31, 5);
  ImatrixOptions opt;
  opt.n_ctx = 16;
  EXPECT_THROW(compute_imatrix(*model, tokens, opt), Error);
}

}  // namespace
}  // namespace lamina
