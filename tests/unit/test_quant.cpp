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
#include "kernels/cpu_features.h"
#include "kernels/kquant_dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/q4_k_x8.h"
#include "kernels/q6_k_x8.h"
#include "kernels/quant_dot.h"
#include "kernels/quant_matmul.h"
#include "quant/ggml_blocks.h"
#include "quant/quant_mix.h"
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
  EXPECT_EQ(parse_ggml_type("Q5_K"), GgmlType::Q5_K);
  EXPECT_THROW(parse_ggml_type("q7_k"), Error);
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

namespace {

// The exact value of the int8 product: sum_b dw · dx · sumi in double, from ggml's own blocks
// (quantize_row / dequantize_row, byte-identical to ggml's reference quantizers) — and the sum of
// the terms' magnitudes, the scale of F32 accumulation error.
std::pair<double, double> exact_q8_dot(const std::vector<uint8_t>& xq8, const uint8_t* wrow,
                                       GgmlType wt, int64_t K) {
  std::vector<float> xv(static_cast<size_t>(K)), wv(static_cast<size_t>(K));
  dequantize_row(GgmlType::Q8_0, xq8.data(), K, xv.data());
  dequantize_row(wt, wrow, K, wv.data());
  double s = 0, mag = 0;
  for (int64_t k = 0; k < K; ++k) s += double(xv[size_t(k)]) * wv[size_t(k)];
  for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(xv[size_t(k)]) * wv[size_t(k)]);
  return {s, mag};
}

}  // namespace

// Activations quantized for the integer products are ggml's Q8_0 blocks exactly (the same values
// and f16 scales as quantize_row, itself byte-identical to ggml's reference quantizer).
TEST(QuantDot, ActivationsAreGgmlQ8_0Blocks) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 2.f);
  const int64_t M = 5, K = 128;
  std::vector<float> x(size_t(M * K));
  for (auto& v : x) v = nd(rng);
  std::fill(x.begin() + 32, x.begin() + 64, 0.f);  // an all-zero block: d = 0, q = 0
  // A block whose maximum is 127 (d = 1): ties at .5 round away from zero (roundf), as ggml's.
  const float ties[] = {127.f, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f, 3.49f};
  std::copy(std::begin(ties), std::end(ties), x.begin() + 64);
  // A block of values just below ties (x · (1 / d) within an ulp of .5: roundf goes down).
  for (int j = 0; j < 32; ++j) x[size_t(96 + j)] = (j % 2 ? -1.f : 1.f) * (float(j) + 0.4999999f);
  x[size_t(96)] = 127.f;
  for (QuantKernel k : runnable_quant_kernels()) {
    Q8Activations a;
    quantize_activations_q8_0(x.data(), M, K, a, k);
    std::vector<uint8_t> blocks(ggml_row_bytes(GgmlType::Q8_0, K));
    for (int64_t m = 0; m < M; ++m) {
      quantize_row(GgmlType::Q8_0, x.data() + m * K, K, blocks.data());
      for (int64_t b = 0; b < K / 32; ++b) {
        const uint8_t* blk = blocks.data() + b * 34;
        uint16_t h;
        std::memcpy(&h, blk, 2);
        ASSERT_EQ(a.d[size_t(m * (K / 32) + b)], f16_to_f32(h))
            << quant_kernel_name(k) << " " << m << " " << b;
        ASSERT_EQ(0, std::memcmp(a.q.data() + m * K + b * 32, blk + 2, 32))
            << quant_kernel_name(k) << " " << m << " " << b;
        int32_t sum = 0;
        for (int j = 0; j < 32; ++j) sum += a.q[size_t(m * K + b * 32 + j)];
        ASSERT_EQ(a.s[size_t(m * (K / 32) + b)], sum) << quant_kernel_name(k);
      }
    }
    const int8_t want[] = {127, 3, -3, 1, -1, 2, -127, 3};
    EXPECT_EQ(0, std::memcmp(a.q.data() + 64, want, sizeof want)) << quant_kernel_name(k);
  }
}

// Every kernel variant this CPU runs (scalar always; AVX2 where present) against the exact
// product, for Q8_0 and Q4_0 weights and both repacked (Q8_0x8, Q4_0x8), tiles cut at every
// remainder (M = 1..9, 70; N odd), with and without accumulation, including Q8_0's -128 that GGUF
// files from elsewhere may hold.
TEST(QuantDot, EveryRunnableKernelEqualsTheExactProduct) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t N = 37, K = 160, nb = K / 32;
  std::printf("CPU: %s; kernels:", cpu_description().c_str());
  for (QuantKernel k : runnable_quant_kernels()) std::printf(" %s", quant_kernel_name(k));
  std::printf("\n");
  for (GgmlType wt : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    const DType dt = wt == GgmlType::Q8_0 ? DType::Q8_0 : DType::Q4_0;
    const size_t rb = ggml_row_bytes(wt, K);
    std::vector<float> wf(size_t(N * K));
    for (auto& v : wf) v = nd(rng) * 0.05f;
    std::vector<uint8_t> w(rb * size_t(N));
    for (int64_t n = 0; n < N; ++n) quantize_row(wt, wf.data() + n * K, K, w.data() + n * rb);
    if (wt == GgmlType::Q8_0) w[2 * rb + 2 + 5] = 0x80;  // q = -128 in row 2, block 0
    for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 8, 9, 70}) {
      std::vector<float> x(size_t(M * K));
      for (auto& v : x) v = nd(rng);
      Q8Activations a;
      quantize_activations_q8_0(x.data(), M, K, a);
      for (QuantKernel k : runnable_quant_kernels())
        for (bool acc : {false, true}) {
          std::vector<float> y(size_t(M * N), 0.25f);
          // Two calls over [0, 20) and [20, N) rows of w, as threads split them.
          quant_dot_rows(k, dt, a, 0, M, w.data(), rb, 0, 20, y.data(), N, acc);
          quant_dot_rows(k, dt, a, 0, M, w.data(), rb, 20, N, y.data(), N, acc);
          // The rows repacked as Q4_0x8 / Q8_0x8 (the first 32 rows: whole groups), two ranges.
          std::vector<float> y8(size_t(M * N), 0.25f);
          const DType x8 = dt == DType::Q4_0 ? DType::Q4_0x8 : DType::Q8_0x8;
          std::vector<uint8_t> w8(rb * 32);
          repack_x8(dt, w.data(), 32, K, w8.data());
          // [0, 8) and [8, 32): one group alone, and three (a tile of two groups, one left).
          quant_dot_rows(k, x8, a, 0, M, w8.data(), rb, 0, 8, y8.data(), N, acc);
          quant_dot_rows(k, x8, a, 0, M, w8.data(), rb, 8, 32, y8.data(), N, acc);
          std::vector<uint8_t> xq8(ggml_row_bytes(GgmlType::Q8_0, K));
          for (int64_t m = 0; m < M; ++m) {
            quantize_row(GgmlType::Q8_0, x.data() + m * K, K, xq8.data());
            for (int64_t n = 0; n < N; ++n) {
              auto [want, mag] = exact_q8_dot(xq8, w.data() + n * rb, wt, K);
              if (acc) want += 0.25;
              // F32 accumulation over nb blocks: a few ulps of the terms' magnitude.
              ASSERT_NEAR(y[size_t(m * N + n)], want, 4e-7 * (mag + 0.25) * nb)
                  << quant_kernel_name(k) << " " << ggml_type_name(wt) << " M=" << M << " m=" << m
                  << " n=" << n << " acc=" << acc;
              if (n < 32) {
                ASSERT_NEAR(y8[size_t(m * N + n)], want, 4e-7 * (mag + 0.25) * nb)
                    << quant_kernel_name(k) << " " << dtype_name(x8) << " M=" << M << " m=" << m
                    << " n=" << n << " acc=" << acc;
              }
            }
          }
        }
    }
  }
  (void)nb;
}

// linear() with Q8_0/Q4_0 weights: llama.cpp's semantics (activations to Q8_0, integer products)
// on the decoding shapes and the prompt shapes (several chunks of 64 rows), with and without
// accumulation; the embedding gathers quantized rows exactly.
TEST(QuantizedLinear, QuantizesTheActivationsAsGgmlDoes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  // 3 threads over 50 rows: pieces of 16, 16, 16 and 2 rows taken as threads free up (restored
  // however the test ends).
  struct Threads {
    int before = num_threads();
    Threads() { set_num_threads(3); }
    ~Threads() { set_num_threads(before); }
  } threads;
  const int64_t N = 50, K = 96;
  Tensor w = Tensor::empty(DType::F32, {N, K});
  for (int64_t i = 0; i < N * K; ++i) w.f32()[i] = nd(rng) * 0.1f;
  for (DType q : {DType::Q8_0, DType::Q4_0}) {
    const GgmlType gt = q == DType::Q8_0 ? GgmlType::Q8_0 : GgmlType::Q4_0;
    Tensor wq = w.to(q), wf = wq.to(DType::F32);
    ASSERT_EQ(wq.nbytes(), dtype_bytes(q, N * K));
    for (int64_t M : {1, 3, 37, 150}) {
      std::vector<float> x(size_t(M * K)), y(size_t(M * N), 0.5f);
      for (auto& v : x) v = nd(rng);
      std::vector<uint8_t> xq8(ggml_row_bytes(GgmlType::Q8_0, K));
      for (bool acc : {false, true}) {
        std::vector<float> before = y;
        linear(x.data(), M, wq, y.data(), acc);
        for (int64_t m = 0; m < M; ++m) {
          quantize_row(GgmlType::Q8_0, x.data() + m * K, K, xq8.data());
          for (int64_t n = 0; n < N; ++n) {
            auto [want, mag] = exact_q8_dot(
                xq8, static_cast<const uint8_t*>(wq.data) + n * ggml_row_bytes(gt, K), gt, K);
            if (acc) want += before[size_t(m * N + n)];
            ASSERT_NEAR(y[size_t(m * N + n)], want, 2e-6 * (1 + mag))
                << dtype_name(q) << " M=" << M << " acc=" << acc << " m=" << m << " n=" << n;
          }
        }
      }
    }
    std::vector<float> row(static_cast<size_t>(K)), rowf(static_cast<size_t>(K));
    const int32_t id = 5;
    embedding(wq, &id, 1, row.data());
    embedding(wf, &id, 1, rowf.data());
    EXPECT_EQ(row, rowf) << dtype_name(q);
  }
}

// linear_group (q, k, v; gate, up): the products of weights that quantize their input the same way
// together (one quantization, one pass of 3 threads over all their rows), equal to one linear()
// each to the bit (the same kernel, the same sums per row); mixed groups one linear() each; a
// group of different widths an error.
TEST(QuantizedLinear, GroupsEqualTheirProductsOneByOne) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 1.f);
  struct Threads {
    int before = num_threads();
    Threads() { set_num_threads(3); }
    ~Threads() { set_num_threads(before); }
  } threads;
  const int64_t K = 512;
  // A weight of N rows as type t (Q4_0x8 / Q8_0x8 repacked from Q4_0 / Q8_0, as a Model holds
  // them; Q4_Kx8 from Q4_K).
  auto weight = [&](DType t, int64_t N) {
    std::vector<float> wf(size_t(N * K));
    for (auto& v : wf) v = 0.05f * nd(rng);
    const DType stored = t == DType::Q4_0x8   ? DType::Q4_0
                         : t == DType::Q8_0x8 ? DType::Q8_0
                         : t == DType::Q4_Kx8 ? DType::Q4_K
                                              : t;
    Tensor w = Tensor::empty(stored, {N, K});
    if (stored == DType::F32)
      std::copy(wf.begin(), wf.end(), w.f32());
    else
      convert_from_f32(wf.data(), w.data, stored, size_t(N * K));
    if (t == stored) return w;
    Tensor r = Tensor::empty(t, {N, K});
    const auto* src = static_cast<const uint8_t*>(w.data);
    if (t == DType::Q4_Kx8)
      repack_q4_k_x8(src, N, K, static_cast<uint8_t*>(r.data));
    else
      repack_x8(stored, src, N, K, static_cast<uint8_t*>(r.data));
    return r;
  };
  const std::vector<std::vector<DType>> groups = {
      {DType::Q4_0x8, DType::Q4_0x8, DType::Q4_0x8},  // q, k, v of a Q4_0 model
      {DType::Q4_0, DType::Q8_0x8, DType::Q8_0},      // Q8_0 activations, every layout
      {DType::Q4_Kx8, DType::Q6_K},                   // Q8_K (a Q4_K_M layer's gate / up, v)
      {DType::Q4_K, DType::Q5_K, DType::Q6_K},
      {DType::Q4_0, DType::Q4_K},    // two codes: one by one
      {DType::Q8_0, DType::Q3_K},    // a type without integer products
      {DType::F32, DType::Q4_0x8}};  // not all quantized (linear_group)
  for (const auto& types : groups)
    for (int64_t M : {1, 3, 70}) {
      std::vector<float> x(size_t(M * K));
      for (auto& v : x) v = nd(rng);
      std::vector<Tensor> ws;
      std::vector<std::vector<float>> ys, refs;
      std::vector<LinearTarget> ts;
      for (size_t i = 0; i < types.size(); ++i) {
        const int64_t N = 16 * int64_t(i + 1) + 40;  // 56, 72, 88: pieces cut inside each
        ws.push_back(weight(types[i], N));
        ys.emplace_back(size_t(M * N), 7.f);
        refs.emplace_back(size_t(M * N));
      }
      for (size_t i = 0; i < types.size(); ++i) {
        ts.push_back({&ws[i], ys[i].data()});
        linear(x.data(), M, ws[i], refs[i].data());
      }
      linear_group(x.data(), M, ts);
      for (size_t i = 0; i < types.size(); ++i)
        ASSERT_EQ(ys[i], refs[i]) << dtype_name(types[i]) << " in a group of " << types.size()
                                  << ", M=" << M;
    }
  Tensor a = weight(DType::Q4_0, 8);
  Tensor b = Tensor::empty(DType::Q4_0, {8, 256});
  std::vector<float> x(static_cast<size_t>(K)), y(64);
  const LinearTarget mixed[] = {{&a, y.data()}, {&b, y.data()}};
  EXPECT_THROW(linear_group(x.data(), 1, mixed), Error);
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

// The types lamina reads from GGUF files and multiplies by expansion to bf16 (Q2_K, Q3_K, Q5_0,
// Q5_1), quantized by ggml's quantizers: linear() on them equals linear() on their dequantized
// values stored as bf16, on both paths (gemv for decoding, gemm for prompts).
TEST(QuantizedLinear, ExpandedTypesMatchTheirDequantizedValues) {
  std::mt19937 rng(11);
  const int64_t N = 24, K = 512;
  std::normal_distribution<float> nd(0.f, 1.f);
  // Q4_K / Q5_K / Q6_K take this path only for prompts (> 4 rows) where bf16 products are native.
  std::vector<DType> types{DType::Q2_K, DType::Q3_K, DType::Q5_0, DType::Q5_1};
  if (kquant_prompts_in_bf16()) types.insert(types.end(), {DType::Q4_K, DType::Q5_K, DType::Q6_K});
  for (DType q : types) {
    std::vector<float> wf(size_t(N * K));
    for (auto& v : wf) v = 0.05f * nd(rng);
    Tensor wq = Tensor::empty(q, {N, K});
    convert_from_f32(wf.data(), wq.data, q, size_t(N * K));
    Tensor wb = wq.to(DType::F32).to(DType::BF16);
    for (int64_t M : {1, 3, 37}) {
      std::vector<float> x(size_t(M * K)), y(size_t(M * N)), ref(size_t(M * N));
      for (auto& v : x) v = nd(rng);
      if (M <= 4 && is_integer_kquant(q)) continue;  // decoding: Q8_K integer products
      linear(x.data(), M, wq, y.data());
      linear(x.data(), M, wb, ref.data());
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << dtype_name(q) << " M=" << M;
    }
  }
}

// Each block type's quantize / dequantize round trip stays within its resolution: the worst error
// over a row of N(0, 1) values, relative to the row's largest value (byte equality with ggml's
// own quantizers is tests/oracles/test_llamacpp.py's).
TEST(GgmlBlocks, EveryTypeRoundTripsWithinItsResolution) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t n = 4096;
  std::vector<float> x(static_cast<size_t>(n)), y(x.size()), imp(x.size());
  for (auto& v : x) v = nd(rng);
  for (auto& v : imp) v = 0.5f + std::fabs(nd(rng));
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const struct {
    GgmlType t;
    float bound;  // the worst error measured with and without importance, x ~1.4
  } cases[] = {{GgmlType::Q8_0, 0.0055f}, {GgmlType::Q6_K, 0.03f},  {GgmlType::Q5_K, 0.055f},
               {GgmlType::Q5_1, 0.037f},  {GgmlType::Q5_0, 0.065f}, {GgmlType::Q4_K, 0.1f},
               {GgmlType::Q4_0, 0.13f},   {GgmlType::Q3_K, 0.22f},  {GgmlType::Q2_K, 0.38f}};
  for (const auto& c : cases)
    for (const float* qw :
         {static_cast<const float*>(nullptr), static_cast<const float*>(imp.data())}) {
      std::vector<uint8_t> q(ggml_row_bytes(c.t, n));
      quantize_row(c.t, x.data(), n, q.data(), qw);
      dequantize_row(c.t, q.data(), n, y.data());
      float worst = 0;
      for (int64_t i = 0; i < n; ++i)
        worst = std::max(worst, std::fabs(y[size_t(i)] - x[size_t(i)]));
      EXPECT_LE(worst / amax, c.bound) << ggml_type_name(c.t) << (qw ? " with importance" : "");
    }
}

// llama.cpp's Q4_K_M on a 32-layer Llama with GQA (Mistral 7B's shape), as its published files
// have it: the output matrix Q6_K, the embedding Q4_K, attn_v and ffn_down Q6_K in the first and
// last eighth and every third layer between, the rest Q4_K; rows not whole 256-blocks fall back.
TEST(QuantMix, Q4KMFollowsLlamaCppsRules) {
  const QuantMix& m = parse_quant_mix("Q4_K_M");
  EXPECT_EQ(m.ftype, 15u);
  MixModel mm;
  mm.n_layer = 32, mm.n_gqa = 4;
  EXPECT_EQ(mix_tensor_type(m, mm, "output.weight", 4096), GgmlType::Q6_K);
  EXPECT_EQ(mix_tensor_type(m, mm, "token_embd.weight", 4096), GgmlType::Q4_K);
  std::string six;
  for (int l = 0; l < 32; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const GgmlType v = mix_tensor_type(m, mm, b + "attn_v.weight", 4096);
    EXPECT_EQ(mix_tensor_type(m, mm, b + "ffn_down.weight", 14336), v) << l;
    EXPECT_EQ(mix_tensor_type(m, mm, b + "attn_q.weight", 4096), GgmlType::Q4_K);
    if (v == GgmlType::Q6_K) six += std::to_string(l) + " ";
  }
  EXPECT_EQ(six, "0 1 2 3 6 9 12 15 18 21 24 27 28 29 30 31 ");
  mm.tied = true;  // the embedding is the output matrix
  EXPECT_EQ(mix_tensor_type(m, mm, "token_embd.weight", 4096), GgmlType::Q6_K);
  EXPECT_EQ(mix_tensor_type(m, mm, "blk.5.attn_q.weight", 896), GgmlType::Q5_0);  // fallback
  EXPECT_EQ(mix_tensor_type(m, mm, "blk.5.attn_q.weight", 80), GgmlType::F16);
  EXPECT_EQ(mix_tensor_type(parse_quant_mix("q8_0"), mm, "output.weight", 4096), GgmlType::Q8_0);
  EXPECT_THROW(parse_quant_mix("q4_k"), Error);  // a type, not a file type
}

namespace lamina {
namespace {

// Q4_K / Q5_K / Q6_K against Q8_K activations: every kernel this CPU runs equals the exact product
// of the dequantized weights and activations (in double) within float rounding of the terms, and
// linear() (threads over row ranges, chunks of activation rows) equals the reference kernel.
// Every quantizer variant gives the same Q8_K bytes as the scalar reference (ggml's, checked
// against ggml itself in oracle_llamacpp): Gaussian rows, halves that round to even (max 127, so
// iscale = -1), a block of zeros, ties for the largest |x| of both signs.
TEST(KQuantDot, EveryQ8KQuantizerGivesTheSameBytes) {
  const int64_t K = 1024, M = 6;
  std::mt19937 rng(29);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(M * K));
  for (auto& v : x) v = nd(rng);
  for (int64_t j = 0; j < 256; ++j) x[size_t(K + j)] = float(j % 64) - 31.5f;  // ties at .5
  x[size_t(K)] = 127.f;
  std::fill(x.begin() + 2 * K, x.begin() + 2 * K + 256, 0.f);
  x[size_t(3 * K + 7)] = 5.f, x[size_t(3 * K + 9)] = -5.f;  // the first of equal |x| sets d
  Q8KActivations ref;
  quantize_activations_q8_k(x.data(), M, K, ref, QuantKernel::kScalar);
  EXPECT_EQ(ref.q[size_t(K + 1)], 30);  // -1 · -30.5 = 30.5 -> 30 (to even)
  for (QuantKernel k : runnable_quant_kernels()) {
    Q8KActivations a;
    quantize_activations_q8_k(x.data(), M, K, a, k);
    EXPECT_EQ(a.q, ref.q) << quant_kernel_name(k);
    EXPECT_EQ(a.d, ref.d) << quant_kernel_name(k);
    EXPECT_EQ(a.bsum, ref.bsum) << quant_kernel_name(k);
  }
}

// Q4_Kx8 / Q6_Kx8 hold the same bytes as the Q4_K / Q6_K rows they were made from: unpacking
// gives them back.
TEST(KQuantDot, X8RepackingKeepsEveryByte) {
  const int64_t N = 16, K = 512;
  for (DType t : {DType::Q4_K, DType::Q6_K}) {
    const size_t rb = dtype_bytes(t, K);
    std::vector<uint8_t> rows(rb * size_t(N)), x8(rows.size()), back(rb);
    std::mt19937 rng(5);
    for (auto& b : rows) b = uint8_t(rng());
    if (t == DType::Q4_K)
      repack_q4_k_x8(rows.data(), N, K, x8.data());
    else
      repack_q6_k_x8(rows.data(), N, K, x8.data());
    EXPECT_NE(rows, x8);
    for (int64_t n = 0; n < N; ++n) {
      const uint8_t* group = x8.data() + size_t(n / 8) * 8 * rb;
      if (t == DType::Q4_K)
        unpack_q4_k_x8_row(group, int(n % 8), K, back.data());
      else
        unpack_q6_k_x8_row(group, int(n % 8), K, back.data());
      ASSERT_EQ(0, std::memcmp(back.data(), rows.data() + size_t(n) * rb, rb))
          << dtype_name(t) << " " << n;
    }
  }
}

TEST(KQuantDot, EveryRunnableKernelEqualsTheExactProduct) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t N = 40, K = 768, M = 9;
  std::vector<float> x(size_t(M * K));
  for (auto& v : x) v = nd(rng);
  x[5] = -40.f;  // a negative largest element (Q8_K keeps the sign in d)
  std::fill(x.begin() + 2 * K, x.begin() + 2 * K + 256, 0.f);  // a block of zeros
  Q8KActivations a;
  quantize_activations_q8_k(x.data(), M, K, a);
  EXPECT_EQ(a.q[5], -127);
  EXPECT_FLOAT_EQ(a.d[0], -40.f / -127.f);  // d = max / -127: that element becomes -127
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    std::vector<float> wf(size_t(N * K)), wd(size_t(N * K));
    for (auto& v : wf) v = 0.05f * nd(rng);
    Tensor wq = Tensor::empty(t, {N, K});
    convert_from_f32(wf.data(), wq.data, t, size_t(N * K));
    convert_to_f32(static_cast<const uint8_t*>(wq.data), t, wd.data(), size_t(N * K));
    const size_t rb = dtype_bytes(t, K);
    for (QuantKernel k : runnable_quant_kernels()) {
      for (int64_t m1 = 1; m1 <= M; ++m1) {  // every tile height, and 8 + 1
        std::vector<float> y(size_t(M * N), 0.f);
        kquant_dot_rows(k, t, a, 0, m1, static_cast<const uint8_t*>(wq.data), rb, 0, N, y.data(), N,
                        false);
        // Q4_K / Q6_K repacked as Q4_Kx8 / Q6_Kx8 (as an inference Model holds them), in two
        // ranges of whole groups (2 and 3 of them: 512-bit tiles of two groups, and one left),
        // accumulating onto 0.25.
        std::vector<float> y8(size_t(M * N), 0.25f);
        std::vector<uint8_t> w8(rb * size_t(N));
        const DType x8 = t == DType::Q4_K ? DType::Q4_Kx8 : DType::Q6_Kx8;
        const bool repacked = t != DType::Q5_K;
        if (repacked) {
          const auto* src = static_cast<const uint8_t*>(wq.data);
          if (t == DType::Q4_K)
            repack_q4_k_x8(src, N, K, w8.data());
          else
            repack_q6_k_x8(src, N, K, w8.data());
          kquant_dot_rows(k, x8, a, 0, m1, w8.data(), rb, 0, 16, y8.data(), N, true);
          kquant_dot_rows(k, x8, a, 0, m1, w8.data(), rb, 16, N, y8.data(), N, true);
        }
        for (int64_t m = 0; m < m1; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double exact = 0, mag = 0;
            for (int64_t j = 0; j < K; ++j) {
              const double xv = double(a.q[size_t(m * K + j)]) * a.d[size_t(m * K / 256 + j / 256)];
              exact += xv * wd[size_t(n * K + j)];
              mag += std::fabs(xv * wd[size_t(n * K + j)]);
            }
            ASSERT_NEAR(y[size_t(m * N + n)], exact, 1e-6 * mag + 1e-30)
                << dtype_name(t) << " " << quant_kernel_name(k) << " m=" << m << " n=" << n;
            if (repacked) {
              ASSERT_NEAR(y8[size_t(m * N + n)], exact + 0.25, 1e-6 * (mag + 0.25))
                  << dtype_name(x8) << " " << quant_kernel_name(k) << " m=" << m << " n=" << n;
            }
          }
      }
    }
    // Decoding (3 rows) always, prompts (7) unless they go through bf16 (the test above).
    const int64_t Ml = kquant_prompts_in_bf16() ? 3 : M;
    std::vector<float> y(size_t(Ml * N)), ref(size_t(Ml * N));
    linear(x.data(), Ml, wq, y.data());
    kquant_dot_rows(QuantKernel::kScalar, t, a, 0, Ml, static_cast<const uint8_t*>(wq.data), rb, 0,
                    N, ref.data(), N, false);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << dtype_name(t);
  }
}

}  // namespace
}  // namespace lamina
