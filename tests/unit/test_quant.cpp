#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/gguf_writer.h"
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
