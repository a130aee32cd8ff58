// Kernels against naive double-precision loops written here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/bf16_gemv.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "test_util.h"

using namespace lamina;
using lamina::test::randn;

TEST(Kernels, LinearF32MatchesNaive) {
  for (auto [M, K, N] : {std::tuple{1, 64, 48}, {7, 33, 5}, {32, 128, 96}}) {
    auto x = randn(size_t(M * K), 1), w = randn(size_t(N * K), 2);
    Tensor wt = Tensor::view_of(w.data(), DType::F32, {N, K});
    std::vector<float> y(size_t(M * N), 0.f);
    linear(x.data(), M, wt, y.data());
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += double(x[size_t(m * K + k)]) * w[size_t(n * K + k)];
        ASSERT_NEAR(y[size_t(m * N + n)], s, 1e-4) << M << "x" << K << "x" << N;
      }
    // accumulate adds to what is there
    std::vector<float> y2 = y;
    linear(x.data(), M, wt, y2.data(), true);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y2[i], 2 * y[i], 1e-4);
  }
}

TEST(Kernels, LinearBf16RoundsInputsAndAccumulatesInF32) {
  const int M = 5, K = 96, N = 40;
  auto x = randn(size_t(M * K), 3), wf = randn(size_t(N * K), 4);
  std::vector<uint16_t> w(wf.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(wf[i]);
  // Both variants this CPU can run: oneDNN's bf16 kernels (AVX-512 and newer) and the widened
  // F32 path every x86-64 CPU runs.
  std::vector<bool> modes{true};
  if (bf16_matmul_native()) modes.push_back(false);
  for (bool emulated : modes) {
    set_bf16_matmul_emulated(emulated);
    std::vector<float> y(size_t(M * N), 7.f);
    linear(x.data(), M, Tensor::view_of(w.data(), DType::BF16, {N, K}), y.data(), emulated);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        double s = emulated ? 7.0 : 0.0;  // the emulated pass also checks accumulate
        for (int k = 0; k < K; ++k)
          s += double(bf16_to_f32(f32_to_bf16(x[size_t(m * K + k)]))) *
               bf16_to_f32(w[size_t(n * K + k)]);
        ASSERT_NEAR(y[size_t(m * N + n)], s, 1e-4) << (emulated ? "emulated" : "native");
      }
  }
  set_bf16_matmul_emulated(false);
}

// Decoding shapes (1..4 rows) with bf16 weights on each path this CPU runs — the in-register
// widening GEMV (no native bf16, AVX2), the F32 slabs, oneDNN's bf16 kernels — against the exact
// product over the rounded inputs; K = 200 leaves a tail after the 16-wide steps, N = 37 uneven
// thread ranges.
TEST(Kernels, Bf16DecodingProductsOnEveryPath) {
  const int64_t K = 200, N = 37;
  auto wf = randn(size_t(N * K), 21);
  std::vector<uint16_t> w(wf.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(wf[i]);
  const Tensor wt = Tensor::view_of(w.data(), DType::BF16, {N, K});
  struct Path {
    const char* name;
    bool emulated, gemv_off;
  };
  std::vector<Path> paths{{"slabs", true, true}};
  if (bf16_gemv_runnable()) paths.push_back({"gemv", true, false});
  if (bf16_matmul_native()) paths.push_back({"native", false, false});
  for (const Path& p : paths)
    for (int64_t M = 1; M <= 4; ++M)
      for (bool acc : {false, true}) {
        set_bf16_matmul_emulated(p.emulated);
        set_bf16_gemv_disabled(p.gemv_off);
        auto x = randn(size_t(M * K), 30 + int(M));
        std::vector<float> y(size_t(M * N), 0.5f);
        linear(x.data(), M, wt, y.data(), acc);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double s = acc ? 0.5 : 0.0;
            for (int64_t k = 0; k < K; ++k)
              s += double(bf16_to_f32(f32_to_bf16(x[size_t(m * K + k)]))) *
                   bf16_to_f32(w[size_t(n * K + k)]);
            ASSERT_NEAR(y[size_t(m * N + n)], s, 1e-4) << p.name << " M=" << M << " acc=" << acc;
          }
      }
  set_bf16_matmul_emulated(false);
  set_bf16_gemv_disabled(false);
}

TEST(Kernels, GemmBf16MatchesWidenedF32OnEveryVariant) {
  // C = op(A) op(B) with transposes and padded leading dimensions, against F32 over the
  // widened values.
  const int M = 7, N = 33, K = 50;
  for (bool emulated : {true, false}) {
    if (!emulated && !bf16_matmul_native()) continue;
    set_bf16_matmul_emulated(emulated);
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5;
      auto af = randn(size_t((ta ? K : M) * lda), 11), bf = randn(size_t((tb ? N : K) * ldb), 12);
      std::vector<uint16_t> a(af.size()), b(bf.size());
      for (size_t i = 0; i < a.size(); ++i) a[i] = f32_to_bf16(af[i]);
      for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(bf[i]);
      std::vector<float> c(size_t(M * N));
      gemm_bf16(ta, tb, M, N, K, a.data(), lda, b.data(), ldb, c.data(), N, false);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double s = 0;
          for (int k = 0; k < K; ++k)
            s += double(bf16_to_f32(a[size_t(ta ? k * lda + m : m * lda + k)])) *
                 bf16_to_f32(b[size_t(tb ? n * ldb + k : k * ldb + n)]);
          ASSERT_NEAR(c[size_t(m * N + n)], s, 1e-4) << "ta " << ta << " tb " << tb;
        }
    }
  }
  set_bf16_matmul_emulated(false);
}

TEST(Kernels, RmsNorm) {
  const int n = 3, d = 37;
  auto x = randn(size_t(n * d), 5), w = randn(size_t(d), 6);
  std::vector<float> y(x.size());
  rmsnorm(x.data(), w.data(), y.data(), n, d, 1e-5f);
  for (int r = 0; r < n; ++r) {
    double ss = 0;
    for (int i = 0; i < d; ++i) ss += double(x[size_t(r * d + i)]) * x[size_t(r * d + i)];
    double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int i = 0; i < d; ++i)
      ASSERT_NEAR(y[size_t(r * d + i)], w[size_t(i)] * x[size_t(r * d + i)] * inv, 1e-5);
  }
}

TEST(Kernels, RopeRotatesHalves) {
  const int T = 3, H = 2, hd = 8;
  auto x = randn(size_t(T * H * hd), 7);
  auto y = x;
  std::vector<int64_t> pos = {0, 5, 1000};
  rope(y.data(), pos.data(), T, H, hd, 10000.0);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        double a = double(pos[size_t(t)]) * std::pow(10000.0, -2.0 * i / hd);
        const float* v = x.data() + (t * H + h) * hd;
        const float* r = y.data() + (t * H + h) * hd;
        ASSERT_NEAR(r[i], v[i] * std::cos(a) - v[i + hd / 2] * std::sin(a), 2e-4);
        ASSERT_NEAR(r[i + hd / 2], v[i + hd / 2] * std::cos(a) + v[i] * std::sin(a), 2e-4);
      }
}

TEST(Kernels, AttentionCausalGqaWindow) {
  const int T = 6, pos0 = 3, nh = 4, nkv = 2, hd = 8, S = pos0 + T;
  auto q = randn(size_t(T * nh * hd), 8), k = randn(size_t(S * nkv * hd), 9),
       v = randn(size_t(S * nkv * hd), 10);
  for (int window : {0, 3}) {
    std::vector<float> out(q.size());
    attention(q.data(), k.data(), v.data(), out.data(), T, pos0, nh, nkv, hd, nkv * hd, window);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < nh; ++h) {
        int p = pos0 + t, kh = h / (nh / nkv);
        std::vector<double> s;
        std::vector<int> js;
        for (int j = 0; j <= p; ++j) {
          if (window && j <= p - window) continue;
          double d = 0;
          for (int i = 0; i < hd; ++i)
            d += double(q[size_t((t * nh + h) * hd + i)]) * k[size_t((j * nkv + kh) * hd + i)];
          s.push_back(d / std::sqrt(double(hd)));
          js.push_back(j);
        }
        double mx = *std::max_element(s.begin(), s.end()), sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (size_t a = 0; a < js.size(); ++a)
            o += s[a] / sum * v[size_t((js[a] * nkv + kh) * hd + i)];
          ASSERT_NEAR(out[size_t((t * nh + h) * hd + i)], o, 1e-5) << "window " << window;
        }
      }
  }
}

// attention() over spans {len, past} of a cache [nkv, 4 x cap, hd] (span s's keys from s x cap)
// against a double-precision reference, every output within tol.
namespace {
struct SpanShape {
  int64_t len, past;
};
void expect_attention_equals_reference(const std::vector<SpanShape>& spans, int64_t G, int64_t hd,
                                       int window, float softcap, int64_t cap, uint32_t seed,
                                       double tol) {
  const int64_t nkv = 2, nh = G * nkv, Q = nh * hd;
  std::vector<AttentionSpan> sp;
  int64_t rows = 0;
  for (size_t s = 0; s < spans.size(); ++s) {
    sp.push_back({rows, spans[s].len, int64_t(s) * cap, spans[s].past});
    rows += spans[s].len;
  }
  auto q = randn(size_t(rows * Q), seed), k = randn(size_t(nkv * 4 * cap * hd), seed + 1),
       v = randn(size_t(nkv * 4 * cap * hd), seed + 2);
  std::vector<float> out(q.size(), -1.0f);
  attention(q.data(), k.data(), v.data(), out.data(), sp, nh, nkv, hd, hd, 4 * cap * hd, window,
            0.0f, softcap);
  for (const AttentionSpan& a : sp)
    for (int64_t t = 0; t < a.len; ++t)
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t p = a.past + t, kh = h / G;
        auto key = [&](const std::vector<float>& m, int64_t j, int64_t i) {
          return double(m[size_t((kh * 4 * cap + a.key + j) * hd + i)]);
        };
        std::vector<double> s;
        std::vector<int64_t> js;
        for (int64_t j = window ? std::max<int64_t>(0, p - window + 1) : 0; j <= p; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i)
            d += q[size_t((a.row + t) * Q + h * hd + i)] * key(k, j, i);
          d /= std::sqrt(double(hd));
          if (softcap > 0) d = softcap * std::tanh(d / softcap);
          s.push_back(d);
          js.push_back(j);
        }
        double mx = *std::max_element(s.begin(), s.end()), sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double o = 0;
          for (size_t b = 0; b < js.size(); ++b) o += s[b] / sum * key(v, js[b], i);
          ASSERT_NEAR(out[size_t((a.row + t) * Q + h * hd + i)], o, tol)
              << "G " << G << " hd " << hd << " window " << window << " softcap " << softcap
              << " row " << a.row + t << " head " << h;
        }
      }
}
}  // namespace

// Several sequences at once over a cache (continuous batching): every head group size (blocks of
// 8 and 4 heads, single heads), head sizes with a tail (not a multiple of 16) or not a multiple
// of 4, windows and soft-capping (measured error up to ~5e-7).
TEST(Kernels, AttentionSpansOverACacheEqualTheReference) {
  for (int64_t G : {1, 3, 4, 8, 12})
    for (int64_t hd : {18, 20, 64})
      for (int window : {0, 5})
        for (float softcap : {0.0f, 30.0f})
          expect_attention_equals_reference({{1, 0}, {1, 37}, {5, 11}, {1, 2}}, G, hd, window,
                                            softcap, 64, 21, 2e-6);
}

// Prompt-length spans go through attend_block (kernels/attention_blocks.h): several blocks of
// query rows (256 / G each), keys in several blocks of 256 (a span 300 keys in), windows inside
// one key block and across two, soft-capping, beside decoding rows in the same call (measured
// error up to ~1.0e-6).
TEST(Kernels, AttentionPromptBlocksEqualTheReference) {
  for (int64_t G : {1, 4, 8})
    for (int64_t hd : {18, 64})
      for (int window : {0, 5, 200})
        for (float softcap : {0.0f, 30.0f}) {
          if (softcap > 0 && (hd != 64 || window == 5)) continue;  // one pass each is enough
          expect_attention_equals_reference({{40, 0}, {1, 9}, {70, 300}, {17, 5}}, G, hd, window,
                                            softcap, 512, 31, 2e-6);
        }
}

TEST(Kernels, SiluMulSoftmaxLogSoftmax) {
  std::vector<float> g = {-3, -0.5f, 0, 2}, u = {1, 2, 3, 4}, o(4);
  silu_mul(g.data(), u.data(), o.data(), 4);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(o[size_t(i)], g[size_t(i)] / (1 + std::exp(-g[size_t(i)])) * u[size_t(i)], 1e-6);
  std::vector<float> l = {1000, 1001, 999};
  EXPECT_NEAR(log_softmax_at(l.data(), 3, 1), 1.0 - std::log(std::exp(1.0) + 1 + std::exp(-1.0)),
              1e-6);
  softmax_rows(l.data(), 1, 3);
  EXPECT_NEAR(l[0] + l[1] + l[2], 1.0, 1e-6);
  EXPECT_GT(l[1], l[0]);
}

// The threads' ranges cover every value at sizes around the parallel thresholds (16384 for
// silu_mul, 65536 for add_inplace) and with a remainder after whole ranges, on 1 to 3 threads.
TEST(Kernels, ElementwiseOpsCoverEveryValue) {
  const int before = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n :
         {int64_t(16383), int64_t(16385), int64_t(65536), int64_t(65537), int64_t(100003)}) {
      std::vector<float> g(size_t(n), 1.0f), u(size_t(n), 2.0f), o(size_t(n), -7.0f);
      silu_mul(g.data(), u.data(), o.data(), n);
      add_inplace(u.data(), g.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(o[size_t(i)], 2.0 / (1.0 + std::exp(-1.0)), 1e-6) << n << " " << i;
        ASSERT_EQ(u[size_t(i)], 3.0f) << n << " " << i;
      }
    }
  }
  set_num_threads(before);
}

TEST(Kernels, SiluMatchesLibmAcrossTheRange) {
  std::vector<float> g, u, o;
  for (float x = -100.f; x <= 100.f; x += 0.37f) g.push_back(x), u.push_back(1.0f);
  o.resize(g.size());
  silu_mul(g.data(), u.data(), o.data(), int64_t(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    double want = double(g[i]) / (1.0 + std::exp(-double(g[i])));
    ASSERT_NEAR(o[i], want, 1e-6 * std::max(1.0, std::fabs(want))) << g[i];
  }
}
