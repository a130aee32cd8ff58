// Test driver for tests/oracles/test_llamacpp.py: lamina's ggml quantizers and decoders on rows
// the test chose, to compare byte for byte with ggml's own (ggml_quantize_chunk, to_float).
// usage: lamina_quant_probe quantize TYPE N_PER_ROW ROWS.f32 OUT.bin [IMPORTANCE.f32]
//        lamina_quant_probe dequantize TYPE N_PER_ROW BLOCKS.bin OUT.f32
//        lamina_quant_probe dot TYPE N_PER_ROW BLOCKS.bin X.f32 OUT.f32
// Files are raw little-endian arrays; IMPORTANCE holds N_PER_ROW values, used for every row.
// quantize q8_k: activations as ggml's block_q8_K (f32 d, 256 int8, 16 int16 sums per block).
// dot: every weight row of BLOCKS (q4_k, q5_k, q6_k) against every row of X, the activations
// quantized to Q8_K by lamina, through each kernel this CPU runs (for q4_k and q6_k, each also
// on the rows repacked as Q4_Kx8 / Q6_Kx8): OUT [kernels, x rows, w rows].
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "kernels/kquant_dot.h"
#include "kernels/q4_k_x8.h"
#include "kernels/q6_k_x8.h"
#include "quant/ggml_blocks.h"

using namespace lamina;

namespace {
std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}
[[noreturn]] DType fail_type(const char* name) {
  fail("dot: ", name, " is not q4_k, q5_k or q6_k");
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
    if (mode == "quantize" && std::string(argv[2]) == "q8_k") {
      const std::vector<char> in = read_all(argv[4]);
      const int64_t n = std::stoll(argv[3]), rows = int64_t(in.size() / 4) / n;
      Q8KActivations a;
      quantize_activations_q8_k(reinterpret_cast<const float*>(in.data()), rows, n, a);
      std::vector<char> out;
      for (int64_t b = 0; b < rows * n / 256; ++b) {
        const char* d = reinterpret_cast<const char*>(&a.d[size_t(b)]);
        out.insert(out.end(), d, d + 4);
        out.insert(out.end(), a.q.begin() + b * 256, a.q.begin() + (b + 1) * 256);
        const char* s = reinterpret_cast<const char*>(a.bsum.data() + b * 16);
        out.insert(out.end(), s, s + 32);
      }
      write_all(argv[5], out.data(), out.size());
      return 0;
    }
    if (mode == "dot") {
      if (argc < 7) fail("dot: TYPE N_PER_ROW BLOCKS.bin X.f32 OUT.f32");
      const GgmlType g = parse_ggml_type(argv[2]);
      const DType t = g == GgmlType::Q4_K   ? DType::Q4_K
                      : g == GgmlType::Q5_K ? DType::Q5_K
                      : g == GgmlType::Q6_K ? DType::Q6_K
                                            : fail_type(argv[2]);
      const int64_t n = std::stoll(argv[3]);
      const std::vector<char> w = read_all(argv[4]), xs = read_all(argv[5]);
      const size_t rb = dtype_bytes(t, n);
      const int64_t N = int64_t(w.size() / rb), M = int64_t(xs.size() / 4) / n;
      Q8KActivations a;
      quantize_activations_q8_k(reinterpret_cast<const float*>(xs.data()), M, n, a);
      std::vector<float> y;
      for (QuantKernel k : runnable_quant_kernels()) {
        std::vector<float> part(size_t(M * N));
        kquant_dot_rows(k, t, a, 0, M, reinterpret_cast<const uint8_t*>(w.data()), rb, 0, N,
                        part.data(), N, false);
        y.insert(y.end(), part.begin(), part.end());
        if (t == DType::Q5_K) continue;
        // Q4_K / Q6_K repacked as Q4_Kx8 / Q6_Kx8 (as an inference Model holds them): the rows
        // padded to whole groups of 8 with copies of the first, the first N results kept.
        const int64_t N8 = (N + 7) / 8 * 8;
        std::vector<uint8_t> rows(rb * size_t(N8)), x8(rows.size());
        std::memcpy(rows.data(), w.data(), rb * size_t(N));
        for (int64_t r = N; r < N8; ++r) std::memcpy(rows.data() + size_t(r) * rb, w.data(), rb);
        if (t == DType::Q4_K)
          repack_q4_k_x8(rows.data(), N8, n, x8.data());
        else
          repack_q6_k_x8(rows.data(), N8, n, x8.data());
        std::vector<float> part8(size_t(M * N8));
        kquant_dot_rows(k, t == DType::Q4_K ? DType::Q4_Kx8 : DType::Q6_Kx8, a, 0, M, x8.data(), rb,
                        0, N8, part8.data(), N8, false);
        for (int64_t m = 0; m < M; ++m)
          y.insert(y.end(), part8.begin() + m * N8, part8.begin() + m * N8 + N);
      }
      write_all(argv[6], y.data(), y.size() * 4);
      return 0;
    }
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
