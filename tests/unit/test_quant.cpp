#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "core/error.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/mapped_file.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "quant/ggml_blocks.h"
#include "test_util.h"

using namespace lamina;

// Q4_0 represents d * (q - 8), q in 0..15, with d = (value of largest magnitude) / -8: a block of
// multiples of 0.5 from -4 to 3.5 comes back exactly; Q8_0 within half a step (d / 2).
TEST(GgmlBlocks, Q4RoundTripsItsGridAndQ8StaysWithinHalfAStep) {
  std::vector<float> x(64), y(64);
  for (int i = 0; i < 32; ++i) x[size_t(i)] = 0.5f * float(i % 16 - 8);
  for (int i = 32; i < 64; ++i) x[size_t(i)] = std::sin(float(i)) * 3.0f;
  std::vector<uint8_t> q(ggml_row_bytes(GgmlType::Q4_0, 64));
  ASSERT_EQ(q.size(), 2u * 18u);
  quantize_row(GgmlType::Q4_0, x.data(), 64, q.data());
  dequantize_row(GgmlType::Q4_0, q.data(), 64, y.data());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[size_t(i)], x[size_t(i)]) << i;
  std::vector<uint8_t> q8(ggml_row_bytes(GgmlType::Q8_0, 64));
  quantize_row(GgmlType::Q8_0, x.data(), 64, q8.data());
  dequantize_row(GgmlType::Q8_0, q8.data(), 64, y.data());
  for (int i = 32; i < 64; ++i)
    EXPECT_LE(std::fabs(y[size_t(i)] - x[size_t(i)]), 3.0f / 127 / 2 * 1.01f);
  EXPECT_THROW(ggml_row_bytes(GgmlType::Q8_0, 40), Error);  // not a whole number of blocks
  EXPECT_EQ(parse_ggml_type("Q4_0"), GgmlType::Q4_0);
  EXPECT_THROW(parse_ggml_type("q5_k"), Error);
}

// A GGUF whose declared tensors are not all written is an error, and leaves no file behind.
TEST(GgufWriter, IncompleteDataFailsAndLeavesNoFile) {
  test::TempDir d;
  const std::string path = d / "m.gguf";
  {
    GgufWriter w(path);
    w.kv("general.architecture", "llama");
    w.add_tensor("a.weight", {32, 2}, GgmlType::F32);
    w.begin_data();
    std::vector<float> row(32, 1.f);
    w.write(row.data(), row.size() * 4);  // one of two rows
    EXPECT_THROW(w.finish(), Error);
  }
  EXPECT_TRUE(std::filesystem::is_empty(d.path));
}

// linear() with Q8_0/Q4_0 weights equals linear() with those weights expanded and stored as bf16
// (bf16 semantics: activations and weights rounded to bf16, F32 accumulation), on the decoding
// path (a few rows, blocks expanded in registers) and the prompt path (slabs through oneDNN), with
// and without accumulation; the embedding gathers quantized rows exactly.
TEST(QuantizedLinear, MatchesTheExpandedWeightsOnBothPaths) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t N = 48, K = 96;
  Tensor w = Tensor::empty(DType::F32, {N, K});
  for (int64_t i = 0; i < N * K; ++i) w.f32()[i] = nd(rng) * 0.1f;
  for (DType q : {DType::Q8_0, DType::Q4_0}) {
    Tensor wq = w.to(q), wf = wq.to(DType::F32), wb = wf.to(DType::BF16);
    ASSERT_EQ(wq.nbytes(), dtype_bytes(q, N * K));
    for (int64_t M : {1, 3, 37}) {
      std::vector<float> x(size_t(M * K)), y(size_t(M * N), 0.5f), ref(size_t(M * N), 0.5f);
      for (auto& v : x) v = nd(rng);
      for (bool acc : {false, true}) {
        linear(x.data(), M, wq, y.data(), acc);
        linear(x.data(), M, wb, ref.data(), acc);
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref[i], 1e-4f * (1 + std::fabs(ref[i])))
              << dtype_name(q) << " M=" << M << " acc=" << acc << " i=" << i;
      }
    }
    std::vector<float> row(static_cast<size_t>(K)), rowf(static_cast<size_t>(K));
    const int32_t id = 5;
    embedding(wq, &id, 1, row.data());
    embedding(wf, &id, 1, rowf.data());
    EXPECT_EQ(row, rowf) << dtype_name(q);
  }
}

// What GgufWriter writes, parse_gguf reads back: metadata of every kind, tensor infos, offsets
// aligned to 32 inside the data section; every truncation into the data is an error, not a crash.
TEST(GgufReader, ReadsWhatTheWriterWroteAndRejectsEveryTruncation) {
  test::TempDir d;
  const std::string path = d / "m.gguf";
  {
    GgufWriter w(path);
    w.kv("general.architecture", "llama");
    w.kv_u32("llama.block_count", 2);
    w.kv_f32("llama.rope.freq_base", 10000.f);
    w.kv_bool("tokenizer.ggml.add_bos_token", true);
    w.kv("tokenizer.ggml.tokens", std::vector<std::string>{"<unk>", "<s>", "a"});
    w.add_tensor("a.weight", {32, 3}, GgmlType::Q8_0);
    w.add_tensor("b.weight", {5}, GgmlType::F32);
    w.begin_data();
    std::vector<float> row(32, 0.25f), out(5, 1.f);
    std::vector<uint8_t> q(ggml_row_bytes(GgmlType::Q8_0, 32));
    for (int r = 0; r < 3; ++r) {
      quantize_row(GgmlType::Q8_0, row.data(), 32, q.data());
      w.write(q.data(), q.size());
    }
    w.write(out.data(), out.size() * 4);
    w.finish();
  }
  GgufFile g = read_gguf(path);
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.metadata["general.architecture"], "llama");
  EXPECT_EQ(g.metadata["llama.block_count"], 2);
  EXPECT_EQ(g.metadata["llama.rope.freq_base"], 10000.0);
  EXPECT_EQ(g.metadata["tokenizer.ggml.add_bos_token"], true);
  EXPECT_EQ(g.array_lengths["tokenizer.ggml.tokens"], 3u);
  ASSERT_EQ(g.tensors.size(), 2u);
  EXPECT_EQ(g.tensors[0].ne, (std::vector<int64_t>{32, 3}));
  EXPECT_EQ(g.tensors[0].bytes, 3u * 34u);
  EXPECT_EQ(g.tensors[1].offset % 32, 0u);
  EXPECT_EQ(g.data_offset % 32, 0u);
  auto m = MappedFile::open(path);
  float back[32];
  dequantize_row(GgmlType::Q8_0, m->data() + g.data_offset + g.tensors[0].offset, 32, back);
  EXPECT_NEAR(back[7], 0.25f, 1e-4f);  // d = 0.25 / 127 rounded to f16
  // Every prefix that cuts into the header or a tensor's data is rejected (the last tensor's
  // alignment padding is optional).
  const size_t end = size_t(g.data_offset + g.tensors[1].offset + g.tensors[1].bytes);
  int errors = 0;
  for (size_t n = 0; n < end; ++n) {
    try {
      parse_gguf(m->data(), n, "cut");
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_EQ(errors, int(end));
}

// The k-quants (read from GGUF files, no quantizer): random blocks with sane scales; linear() on
// them equals linear() on their dequantized values stored as bf16, on both paths.
TEST(QuantizedLinear, KQuantsMatchTheirDequantizedValues) {
  std::mt19937 rng(11);
  const int64_t N = 24, K = 512;
  for (DType q : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    Tensor wq = Tensor::empty(q, {N, K});
    auto* p = static_cast<uint8_t*>(wq.data);
    for (size_t i = 0; i < wq.nbytes(); ++i) p[i] = uint8_t(rng());
    const size_t bb = q == DType::Q4_K ? 144 : q == DType::Q5_K ? 176 : 210;
    for (size_t b = 0; b < wq.nbytes() / bb; ++b) {  // scales: d (and dmin) small
      const uint16_t d = f32_to_f16(0.004f), dmin = f32_to_f16(0.002f);
      if (q != DType::Q6_K) {
        std::memcpy(p + b * bb, &d, 2), std::memcpy(p + b * bb + 2, &dmin, 2);
      } else {
        std::memcpy(p + b * bb + 208, &d, 2);
      }
    }
    Tensor wb = wq.to(DType::F32).to(DType::BF16);
    for (int64_t M : {1, 3, 37}) {
      std::vector<float> x(size_t(M * K)), y(size_t(M * N)), ref(size_t(M * N));
      std::normal_distribution<float> nd(0.f, 1.f);
      for (auto& v : x) v = nd(rng);
      linear(x.data(), M, wq, y.data());
      linear(x.data(), M, wb, ref.data());
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << dtype_name(q) << " M=" << M;
    }
  }
}
