// Per-op finite-difference checks of the backward kernels (central differences in double on the
// scalar L = sum(dy * f(x)) for a fixed random dy).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/ops_backward.h"
#include "test_util.h"

using namespace lamina;
using lamina::test::randn;

namespace {

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Checks analytic[i] against (L(x + h e_i) - L(x - h e_i)) / 2h for a sample of i.
void expect_fd(std::vector<float>& x, const std::vector<float>& analytic,
               const std::function<double()>& loss, const char* what, double tol = 2e-3) {
  const float h = 1e-2f;
  for (size_t i = 0; i < x.size(); i += std::max<size_t>(1, x.size() / 23)) {
    const float keep = x[i];
    x[i] = keep + h;
    double lp = loss();
    x[i] = keep - h;
    double lm = loss();
    x[i] = keep;
    double fd = (lp - lm) / (2 * h);
    ASSERT_NEAR(analytic[i], fd, tol * std::max(1.0, std::fabs(fd))) << what << " element " << i;
  }
}

}  // namespace

TEST(Backward, RmsNormFiniteDifferences) {
  const int n = 3, d = 16;
  auto x = randn(n * d, 1), w = randn(d, 2), dy = randn(n * d, 3);
  std::vector<float> y(x.size()), dx(x.size()), dw(d, 0.f);
  auto loss = [&] {
    rmsnorm(x.data(), w.data(), y.data(), n, d, 1e-5f);
    return dot(y, dy);
  };
  rmsnorm_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), n, d, 1e-5f);
  expect_fd(x, dx, loss, "dx");
  expect_fd(w, dw, loss, "dw");
}

TEST(Backward, RopeFiniteDifferences) {
  const int T = 4, H = 2, hd = 8;
  auto x = randn(T * H * hd, 4), dy = randn(T * H * hd, 5);
  std::vector<int64_t> pos = {0, 1, 7, 30};
  auto loss = [&] {
    auto y = x;
    rope(y.data(), pos.data(), T, H, hd, 10000.0);
    return dot(y, dy);
  };
  auto dx = dy;
  rope_backward(dx.data(), pos.data(), T, H, hd, rope_default_inv_freq(hd, 10000.0).data());
  expect_fd(x, dx, loss, "dx");
}

TEST(Backward, AttentionFiniteDifferences) {
  const int T = 7, nh = 4, nkv = 2, hd = 8;
  // (scale, softcap): the default 1/sqrt(hd); Gemma's query_pre_attn_scalar; Gemma 2's capping
  // (a small cap, so tanh bends the scores).
  const std::pair<float, float> variants[] = {{0.f, 0.f}, {0.7f, 0.f}, {0.5f, 1.5f}};
  for (int window : {0, 3})
    for (auto [scale, cap] : variants) {
      auto q = randn(T * nh * hd, 6), k = randn(T * nkv * hd, 7), v = randn(T * nkv * hd, 8),
           dy = randn(T * nh * hd, 9);
      std::vector<float> out(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
      auto loss = [&] {
        attention(q.data(), k.data(), v.data(), out.data(), T, 0, nh, nkv, hd, nkv * hd, window,
                  scale, cap);
        return dot(out, dy);
      };
      attention_backward(q.data(), k.data(), v.data(), dy.data(), dq.data(), dk.data(), dv.data(),
                         T, nh, nkv, hd, window, scale, cap);
      expect_fd(q, dq, loss, "dq");
      expect_fd(k, dk, loss, "dk");
      expect_fd(v, dv, loss, "dv");
    }
}

// The gated MLP activations: SwiGLU's silu(g) * u and GeGLU's gelu_tanh(g) * u (Gemma).
TEST(Backward, GatedActivationsFiniteDifferences) {
  using Fwd = void (*)(const float*, const float*, float*, int64_t);
  using Bwd = void (*)(const float*, const float*, const float*, float*, float*, int64_t);
  const std::pair<Fwd, Bwd> pairs[] = {{silu_mul, silu_mul_backward},
                                       {gelu_tanh_mul, gelu_tanh_mul_backward}};
  const int n = 40;
  for (auto [fwd, bwd] : pairs) {
    auto g = randn(n, 10, 3.0f), u = randn(n, 11), dy = randn(n, 12);
    std::vector<float> out(n), dg(n), du(n);
    auto loss = [&] {
      fwd(g.data(), u.data(), out.data(), n);
      return dot(out, dy);
    };
    bwd(g.data(), u.data(), dy.data(), dg.data(), du.data(), n);
    expect_fd(g, dg, loss, "dg");
    expect_fd(u, du, loss, "du");
  }
}

TEST(Backward, GemmTransposesAndAccumulates) {
  const int M = 5, N = 7, K = 6;
  auto A = randn(M * K, 13), Bm = randn(K * N, 14);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // Store op(A) = A_logical [M,K]: when ta, memory holds [K, M].
      std::vector<float> As(M * K), Bs(K * N), C(M * N, 1.0f);
      for (int m = 0; m < M; ++m)
        for (int k = 0; k < K; ++k) (ta ? As[k * M + m] : As[m * K + k]) = A[m * K + k];
      for (int k = 0; k < K; ++k)
        for (int nn = 0; nn < N; ++nn) (tb ? Bs[nn * K + k] : Bs[k * N + nn]) = Bm[k * N + nn];
      gemm(ta, tb, M, N, K, As.data(), ta ? M : K, Bs.data(), tb ? K : N, C.data(), N, true);
      for (int m = 0; m < M; ++m)
        for (int nn = 0; nn < N; ++nn) {
          double s = 1.0;
          for (int k = 0; k < K; ++k) s += double(A[m * K + k]) * Bm[k * N + nn];
          ASSERT_NEAR(C[m * N + nn], s, 1e-4) << ta << tb;
        }
    }
}
