#include "kernels/ops_backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/fast_math.h"
#include "kernels/ops.h"

namespace lamina {

void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                      int64_t n, int64_t d, float eps) {
  std::vector<double> dw_acc(size_t(d), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    const float* gr = dy + r * d;
    double ss = 0, dot = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) {
      dot += double(gr[i]) * w[i] * xr[i];
      dw_acc[size_t(i)] += double(gr[i]) * xr[i] * inv;
    }
    // d/dx of w*x*r: r*w*dy - x * r^3 / d * sum(w*dy*x)
    const double c = dot * inv * inv * inv / double(d);
    float* o = dx + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = float(inv * w[i] * gr[i] - c * xr[i]);
  }
  if (dw)  // null: a frozen gain (no gradient kept)
    for (int64_t i = 0; i < d; ++i) dw[i] += float(dw_acc[size_t(i)]);
}

void rope_backward(float* dx, const int64_t* pos, int64_t T, int64_t heads, int64_t hd,
                   const float* inv_freq) {
  // R(a)^T = R(-a): rotate the gradient by the negated positions' angles.
  std::vector<int64_t> neg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) neg[size_t(t)] = -pos[t];
  rope(dx, neg.data(), T, heads, hd, inv_freq);
}

void attention_backward(const float* q, const float* k, const float* v, const float* dout,
                        float* dq, float* dk, float* dv, int64_t T, int64_t nh, int64_t nkv,
                        int64_t hd, int64_t window, float scale, float softcap) {
  const int64_t group = nh / nkv;
  if (scale <= 0.0f) scale = 1.0f / std::sqrt(float(hd));
  std::fill(dq, dq + T * nh * hd, 0.f);
  std::fill(dk, dk + T * nkv * hd, 0.f);
  std::fill(dv, dv + T * nkv * hd, 0.f);
  // One kv head per task: its dk, dv rows are written by that task only.
#pragma omp parallel
  {
    // cf: d capped score / d score, 1 - tanh^2 (1 without soft-capping).
    std::vector<float> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T)), cf(size_t(T), 1.0f);
#pragma omp for schedule(dynamic, 1)
    for (int64_t kh = 0; kh < nkv; ++kh) {
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
        for (int64_t t = 0; t < T; ++t) {
          const int64_t lo = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
          const float* qv = q + (t * nh + h) * hd;
          const float* go = dout + (t * nh + h) * hd;
          float mx = -INFINITY;
          for (int64_t j = lo; j <= t; ++j) {
            const float* kv = k + (j * nkv + kh) * hd;
            float s = 0.f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < hd; ++i) s += qv[i] * kv[i];
            s *= scale;
            if (softcap > 0.0f) {
              const float th = std::tanh(s / softcap);
              s = softcap * th;
              cf[size_t(j)] = 1.0f - th * th;
            }
            p[size_t(j)] = s;
            mx = std::max(mx, s);
          }
          float sum = 0.f;
          float* pp = p.data();
#pragma omp simd reduction(+ : sum)
          for (int64_t j = lo; j <= t; ++j) sum += (pp[j] = fast_exp(pp[j] - mx));
          const float inv = 1.0f / sum;
          float dsum = 0.f;
          for (int64_t j = lo; j <= t; ++j) {
            p[size_t(j)] *= inv;
            const float* vv = v + (j * nkv + kh) * hd;
            float s = 0.f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < hd; ++i) s += go[i] * vv[i];
            dp[size_t(j)] = s;
            dsum += p[size_t(j)] * s;
          }
          float* dqv = dq + (t * nh + h) * hd;
          for (int64_t j = lo; j <= t; ++j) {
            const float pj = p[size_t(j)], ds = pj * (dp[size_t(j)] - dsum) * cf[size_t(j)] * scale;
            const float* kv = k + (j * nkv + kh) * hd;
            float* dkv = dk + (j * nkv + kh) * hd;
            float* dvv = dv + (j * nkv + kh) * hd;
#pragma omp simd
            for (int64_t i = 0; i < hd; ++i) {
              dqv[i] += ds * kv[i];
              dkv[i] += ds * qv[i];
              dvv[i] += pj * go[i];
            }
          }
        }
      }
    }
  }
}

void silu_mul_backward(const float* g, const float* u, const float* dout, float* dg, float* du,
                       int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + fast_exp(-g[i]));
    du[i] = dout[i] * g[i] * s;
    dg[i] = dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

void gelu_tanh_mul_backward(const float* g, const float* u, const float* dout, float* dg, float* du,
                            int64_t n) {
  const float beta = 0.7978845608028654f, kappa = 0.044715f;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i], t = std::tanh(beta * (x + kappa * x * x * x));
    du[i] = dout[i] * 0.5f * x * (1.0f + t);
    // d/dx 0.5 x (1 + t) = 0.5 (1 + t) + 0.5 x (1 - t^2) beta (1 + 3 kappa x^2)
    const float d =
        0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * beta * (1.0f + 3.0f * kappa * x * x);
    dg[i] = dout[i] * u[i] * d;
  }
}

}  // namespace lamina
