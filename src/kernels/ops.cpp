#include "kernels/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/fast_math.h"

namespace lamina {

void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) {
#pragma omp parallel for if (n * d > 32768)
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < d; ++i) ss += xr[i] * xr[i];
    float inv = 1.0f / std::sqrt(ss / float(d) + eps);
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

std::vector<float> rope_default_inv_freq(int64_t hd, double theta) {
  // In F32 as transformers computes it, so angles round the same way.
  std::vector<float> inv(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    inv[size_t(i)] = 1.0f / std::pow(float(theta), float(2 * i) / float(hd));
  return inv;
}

void rope(float* x, const int64_t* pos, int64_t T, int64_t heads, int64_t hd, double theta) {
  rope(x, pos, T, heads, hd, rope_default_inv_freq(hd, theta).data());
}

void rope(float* x, const int64_t* pos, int64_t T, int64_t heads, int64_t hd, const float* inv) {
  const int64_t half = hd / 2;
#pragma omp parallel if (T * heads * hd > 32768)
  {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
#pragma omp for
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float a = float(pos[t]) * inv[i];
        c[size_t(i)] = std::cos(a);
        s[size_t(i)] = std::sin(a);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * hd;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float a = v[i], b = v[i + half];
          v[i] = a * c[size_t(i)] - b * s[size_t(i)];
          v[i + half] = b * c[size_t(i)] + a * s[size_t(i)];
        }
      }
    }
  }
}

void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
               int64_t nh, int64_t nkv, int64_t hd, int64_t kv_stride, int64_t window, float scale,
               float softcap) {
  const int64_t group = nh / nkv;
  if (scale <= 0.0f) scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel
  {
    std::vector<float> sc(size_t(pos0 + T));
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t p = pos0 + t;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
        const float* qv = q + (t * nh + h) * hd;
        const int64_t kh = h / group;
        float mx = -INFINITY;
        for (int64_t j = lo; j <= p; ++j) {
          const float* kv = k + j * kv_stride + kh * hd;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t i = 0; i < hd; ++i) s += qv[i] * kv[i];
          s *= scale;
          if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
          sc[size_t(j)] = s;
          mx = std::max(mx, s);
        }
        float sum = 0.f;
        float* scp = sc.data();
#pragma omp simd reduction(+ : sum)
        for (int64_t j = lo; j <= p; ++j) {
          float e = fast_exp(scp[j] - mx);
          scp[j] = e;
          sum += e;
        }
        float* o = out + (t * nh + h) * hd;
        std::fill(o, o + hd, 0.f);
        const float inv = 1.0f / sum;
        for (int64_t j = lo; j <= p; ++j) {
          const float a = sc[size_t(j)] * inv;
          const float* vv = v + j * kv_stride + kh * hd;
#pragma omp simd
          for (int64_t i = 0; i < hd; ++i) o[i] += a * vv[i];
        }
      }
    }
  }
}

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + fast_exp(-g[i])) * u[i];
}

void gelu_tanh_mul(const float* g, const float* u, float* out, int64_t n) {
  const float beta = 0.7978845608028654f, kappa = 0.044715f;  // sqrt(2/pi), torch's constants
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(beta * (x + kappa * x * x * x))) * u[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void embedding(const Tensor& table, const int32_t* ids, int64_t T, float* rows) {
  const int64_t V = table.shape[0], H = table.shape[1];
  const size_t row_bytes = dtype_bytes(table.dtype, H);
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= V)
      fail("token id ", ids[t], " is outside the vocabulary [0, ", V, ")");
    convert_to_f32(static_cast<const char*>(table.data) + size_t(ids[t]) * row_bytes, table.dtype,
                   rows + t * H, size_t(H));
  }
}

void softmax_rows(float* x, int64_t n, int64_t d) {
  for (int64_t r = 0; r < n; ++r) {
    float* row = x + r * d;
    float mx = *std::max_element(row, row + d), sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < d; ++i) sum += (row[i] = fast_exp(row[i] - mx));
    for (int64_t i = 0; i < d; ++i) row[i] /= sum;
  }
}

double log_softmax_at(const float* x, int64_t d, int64_t target) {
  float mx = *std::max_element(x, x + d);
  double sum = 0;
  for (int64_t i = 0; i < d; ++i) sum += std::exp(double(x[i] - mx));
  return double(x[target] - mx) - std::log(sum);
}

void to_bf16_parallel(const float* x, uint16_t* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
}

}  // namespace lamina
