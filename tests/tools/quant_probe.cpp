// Test driver for tests/oracles/test_llamacpp.py: lamina's ggml quantizers and decoders on rows
// the test chose, to compare byte for byte with ggml's own (ggml_quantize_chunk, to_float).
// usage: lamina_quant_probe quantize TYPE N_PER_ROW ROWS.f32 OUT.bin [IMPORTANCE.f32]
//        lamina_quant_probe dequantize TYPE N_PER_ROW BLOCKS.bin OUT.f32
// Files are raw little-endian arrays; IMPORTANCE holds N_PER_ROW values, used for every row.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "quant/ggml_blocks.h"

using namespace lamina;

namespace {
std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), std::streamsize(n));
  if (!f) fail(path, ": cannot write");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s quantize|dequantize TYPE N_PER_ROW IN OUT [IMPORTANCE]\n",
                 argv[0]);
    return 2;
  }
  try {
    const std::string mode = argv[1];
    const GgmlType t = parse_ggml_type(argv[2]);
    const int64_t n = std::stoll(argv[3]);
    const size_t rb = ggml_row_bytes(t, n);
    const std::vector<char> in = read_all(argv[4]);
    if (mode == "quantize") {
      const auto* x = reinterpret_cast<const float*>(in.data());
      const int64_t rows = int64_t(in.size() / 4) / n;
      std::vector<char> imp;
      if (argc > 6) imp = read_all(argv[6]);
      if (!imp.empty() && imp.size() != size_t(n) * 4) fail(argv[6], ": not N_PER_ROW floats");
      const float* qw = imp.empty() ? nullptr : reinterpret_cast<const float*>(imp.data());
      std::vector<uint8_t> out(rb * size_t(rows));
      for (int64_t r = 0; r < rows; ++r) quantize_row(t, x + r * n, n, out.data() + r * rb, qw);
      write_all(argv[5], out.data(), out.size());
    } else if (mode == "dequantize") {
      const int64_t rows = int64_t(in.size() / rb);
      std::vector<float> y(size_t(rows * n));
      for (int64_t r = 0; r < rows; ++r)
        dequantize_row(t, reinterpret_cast<const uint8_t*>(in.data()) + r * rb, n,
                       y.data() + r * n);
      write_all(argv[5], y.data(), y.size() * 4);
    } else {
      fail("mode must be quantize or dequantize, not ", mode);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lamina_quant_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
