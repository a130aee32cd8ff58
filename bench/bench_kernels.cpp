// Microbenchmarks of the kernels (Google Benchmark): matmul f32/bf16, quantized, widened, and
// attention. LAMINA_QUANT_KERNEL=scalar|avx2|avxvnni|avx512vnni picks the quantized products'
// variant (of those the CPU runs).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/q4_k_x8.h"
#include "kernels/q6_k_x8.h"
#include "kernels/quant_dot.h"
#include "kernels/widened_matmul.h"

using namespace lamina;

static void BM_Linear(benchmark::State& st, DType dt) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  std::vector<float> x(size_t(M * K), 0.01f), y(size_t(M * N));
  Tensor w = Tensor::zeros(dt, {N, K});
  for (auto _ : st) {
    linear(x.data(), M, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M * K * N), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK_CAPTURE(BM_Linear, f32, DType::F32)
    ->Args({128, 2048, 2048})
    ->Args({1024, 4096, 4096})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Linear, bf16, DType::BF16)
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);

// The frozen-base products of LoRA training (--base-dtype): the weight widened a slab at a time.
static void BM_LinearWidened(benchmark::State& st, DType dt, bool dx) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  std::vector<float> x(size_t(M * std::max(K, N)), 0.01f), y(size_t(M * std::max(K, N)));
  Tensor w = Tensor::zeros(dt, {N, K});
  for (auto _ : st) {
    if (dx)
      linear_widened_dx(x.data(), M, w, y.data(), false);
    else
      linear_widened(x.data(), M, w, y.data(), false);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M * K * N), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK_CAPTURE(BM_LinearWidened, bf16, DType::BF16, false)
    ->Args({1024, 4096, 4096})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearWidened, bf16_dx, DType::BF16, true)
    ->Args({1024, 4096, 4096})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearWidened, q4_0, DType::Q4_0, false)
    ->Args({1024, 4096, 4096})
    ->Args({1024, 4096, 14336})
    ->Args({146, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
// The chunked MLP backward's row chunks (~146 rows of the Mistral-7B widths): the input gradient.
BENCHMARK_CAPTURE(BM_LinearWidened, q4_0_dx, DType::Q4_0, true)
    ->Args({1024, 4096, 14336})
    ->Args({146, 4096, 14336})
    ->Unit(benchmark::kMillisecond);

// Q8_0 / Q4_0 weights through linear (activations to Q8_0, integer products; random blocks, so
// the zero-skipping a constant weight would allow cannot flatter it).
static void BM_LinearQuantized(benchmark::State& st, DType dt) {
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(M * K)), y(size_t(M * N));
  for (auto& v : x) v = nd(rng);
  Tensor wf = Tensor::empty(DType::F32, {N, K});
  for (int64_t i = 0; i < N * K; ++i) wf.f32()[i] = nd(rng) * 0.02f;
  const bool x8 =
      dt == DType::Q4_0x8 || dt == DType::Q8_0x8 || dt == DType::Q4_Kx8 || dt == DType::Q6_Kx8;
  const DType stored = dt == DType::Q4_0x8   ? DType::Q4_0
                       : dt == DType::Q8_0x8 ? DType::Q8_0
                       : dt == DType::Q4_Kx8 ? DType::Q4_K
                       : dt == DType::Q6_Kx8 ? DType::Q6_K
                                             : dt;
  Tensor w = wf.to(stored);
  if (x8) {  // as an inference Model holds its Q4_0 / Q8_0 / Q4_K matrices
    Tensor r = Tensor::empty(dt, w.shape);
    const auto* src = static_cast<const uint8_t*>(w.data);
    if (dt == DType::Q4_Kx8)
      repack_q4_k_x8(src, N, K, static_cast<uint8_t*>(r.data));
    else if (dt == DType::Q6_Kx8)
      repack_q6_k_x8(src, N, K, static_cast<uint8_t*>(r.data));
    else
      repack_x8(stored, src, N, K, static_cast<uint8_t*>(r.data));
    w = r;
  }
  for (auto _ : st) {
    linear(x.data(), M, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M * K * N), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
  st.counters["weight GB/s"] =
      benchmark::Counter(double(w.nbytes()), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK_CAPTURE(BM_LinearQuantized, q4_0, DType::Q4_0)
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q4_0x8, DType::Q4_0x8)
    ->Args({1, 8192, 32768})
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({6, 2048, 5632})  // batched decoding (serve): 6 and 8 sequences
    ->Args({8, 2048, 5632})
    ->Args({8, 5632, 16384})  // 8 sequences over a matrix that streams from DRAM (52 MB)
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q8_0x8, DType::Q8_0x8)
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q8_0, DType::Q8_0)
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);

static void BM_Attention(benchmark::State& st) {
  const int64_t T = st.range(0), nh = 16, nkv = 4, hd = 128;
  std::vector<float> q(size_t(T * nh * hd), 0.1f), k(size_t(T * nkv * hd), 0.1f), v(k.size(), 0.1f),
      o(q.size());
  for (auto _ : st)
    attention(q.data(), k.data(), v.data(), o.data(), T, 0, nh, nkv, hd, nkv * hd, 0);
}
BENCHMARK(BM_Attention)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);

BENCHMARK_CAPTURE(BM_LinearQuantized, q4_k, DType::Q4_K)
    ->Args({1, 8192, 32768})
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q4_kx8, DType::Q4_Kx8)
    ->Args({1, 8192, 32768})
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 5632, 2048})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q6_kx8, DType::Q6_Kx8)
    ->Args({1, 4096, 32768})  // from DRAM (110 MB), against q4_kx8's 8192 x 32768
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 5632, 2048})  // TinyLlama's ffn_down, Q6_K in every third layer of Q4_K_M
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q5_k, DType::Q5_K)
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LinearQuantized, q6_k, DType::Q6_K)
    ->Args({1, 8192, 32768})
    ->Args({128, 2048, 2048})
    ->Args({1, 2048, 5632})
    ->Args({1, 4096, 14336})
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
