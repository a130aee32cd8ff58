#include "kernels/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/attention_blocks.h"
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

namespace {

// A key or value row's hd floats on their way into the cache.
inline void prefetch_row(const float* r, int64_t hd) {
  for (int64_t i = 0; i < hd; i += 16) __builtin_prefetch(r + i, 0, 3);
}

constexpr int64_t kAhead = 16;  // rows prefetched ahead (8, 16 and 32 measured alike)

// Scores of GB query heads (qt: their values transposed, [hd][GB]) against keys [lo, p] (row j at
// kb + j * kv_stride) into sc[g * n + j - lo]: each key value is multiplied into the GB heads'
// sums at once (lanes are heads, no horizontal sum per score), 4 sums by i mod 4 in flight.
template <int GB>
void group_scores(const float* qt, const float* kb, const float* vb, int64_t kv_stride, int64_t lo,
                  int64_t p, int64_t hd, float scale, float softcap, float* sc, int64_t n) {
  for (int64_t j = lo; j <= p; ++j) {
    if (j + kAhead <= p) {
      prefetch_row(kb + (j + kAhead) * kv_stride, hd);
      prefetch_row(vb + (j + kAhead) * kv_stride, hd);
    }
    const float* kr = kb + j * kv_stride;
    float s[4][GB] = {};
    for (int64_t i = 0; i < hd; i += 4)
      for (int u = 0; u < 4; ++u) {
        const float kv = kr[i + u];
        const float* qi = qt + (i + u) * GB;
#pragma omp simd
        for (int g = 0; g < GB; ++g) s[u][g] += qi[g] * kv;
      }
    for (int g = 0; g < GB; ++g) {
      float v = ((s[0][g] + s[1][g]) + (s[2][g] + s[3][g])) * scale;
      if (softcap > 0.0f) v = softcap * std::tanh(v / softcap);
      sc[g * n + (j - lo)] = v;
    }
  }
}

// 16 floats in whatever registers the target has (GCC vector extension: one zmm, two ymm, four
// xmm), so that sums stay in registers across a loop (a float[64] array of sums was kept on the
// stack, one store and load per key).
typedef float v16f __attribute__((vector_size(64)));
inline void add_scaled16(v16f& acc, float a, const float* p) {  // acc += a · p[0, 16)
  v16f v;
  std::memcpy(&v, p, sizeof v);
  acc += a * v;
}

// o[i0, i0 + 16 NV) = sum_j a[j] · v[lo + j][i0, i0 + 16 NV).
template <int NV>
void weighted_values(const float* a, const float* vb, int64_t kv_stride, int64_t lo, int64_t n,
                     int64_t i0, float* o) {
  v16f acc[2][NV] = {};  // even and odd keys: two multiply-adds in flight per sum
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    const float* vr = vb + (lo + j) * kv_stride + i0;
    for (int c = 0; c < NV; ++c) {
      add_scaled16(acc[0][c], a[j], vr + 16 * c);
      add_scaled16(acc[1][c], a[j + 1], vr + kv_stride + 16 * c);
    }
  }
  if (j < n)
    for (int c = 0; c < NV; ++c)
      add_scaled16(acc[0][c], a[j], vb + (lo + j) * kv_stride + i0 + 16 * c);
  for (int c = 0; c < NV; ++c) acc[0][c] += acc[1][c];
  std::memcpy(o + i0, acc[0], sizeof acc[0]);
}

// One query row at position p against keys [lo, p] for query heads [h0, h1) of one kv head (one
// group shares it). q, o: the row's [nh, hd]; kb, vb: that kv head's keys and values of the span
// (row j at j * kv_stride); sc: room for (h1 - h0) * (p - lo + 1) scores, qt for hd * 8 floats.
// Decoding reads each sequence's cache once per layer, long evicted by the weights since: rows are
// prefetched kAhead ahead. Per score one multiply-add per element in every variant (sums in another
// order than one head at a time: within float rounding of it).
void attend_heads(const float* q, const float* kb, const float* vb, float* o, int64_t p, int64_t lo,
                  int64_t h0, int64_t h1, int64_t hd, int64_t kv_stride, float scale, float softcap,
                  float* sc, float* qt) {
  const int64_t n = p - lo + 1, G = h1 - h0;
  for (int64_t j = lo; j <= std::min(p, lo + kAhead - 1); ++j) {
    prefetch_row(kb + j * kv_stride, hd);
    prefetch_row(vb + j * kv_stride, hd);
  }
  for (int64_t g0 = 0; g0 < G;) {  // the heads in blocks of 8, 4, then one at a time
    const int64_t gb = hd % 4 ? 1 : G - g0 >= 8 ? 8 : G - g0 >= 4 ? 4 : 1;
    float* sg = sc + g0 * n;
    if (gb > 1) {
      for (int64_t i = 0; i < hd; ++i)
        for (int64_t g = 0; g < gb; ++g) qt[i * gb + g] = q[(h0 + g0 + g) * hd + i];
      (gb == 8 ? group_scores<8> : group_scores<4>)(qt, kb, vb, kv_stride, lo, p, hd, scale,
                                                    softcap, sg, n);
    } else {
      const float* qv = q + (h0 + g0) * hd;
      for (int64_t j = lo; j <= p; ++j) {
        const float* kr = kb + j * kv_stride;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < hd; ++i) s += qv[i] * kr[i];
        s *= scale;
        if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
        sg[j - lo] = s;
      }
    }
    g0 += gb;
  }
  for (int64_t g = 0; g < G; ++g) {  // softmax over each head's scores, normalised in place
    float* sg = sc + g * n;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < n; ++j) mx = mx > sg[j] ? mx : sg[j];
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      const float e = fast_exp(sg[j] - mx);
      sg[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) sg[j] *= inv;
    float* og = o + (h0 + g) * hd;
    int64_t i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) weighted_values<4>(sg, vb, kv_stride, lo, n, i0, og);
    for (; i0 + 16 <= hd; i0 += 16) weighted_values<1>(sg, vb, kv_stride, lo, n, i0, og);
    for (; i0 < hd; ++i0) {  // head sizes not a multiple of 16
      float acc = 0.f;
      for (int64_t j = 0; j < n; ++j) acc += sg[j] * vb[(lo + j) * kv_stride + i0];
      og[i0] = acc;
    }
  }
}

// attention() one query row at a time (decoding): tasks of (span, query row, kv head, part of its
// group).
void attention_rows(const float* q, const float* k, const float* v, float* out,
                    const std::vector<AttentionSpan>& spans, int64_t nh, int64_t nkv, int64_t hd,
                    int64_t kv_stride, int64_t head_stride, int64_t window, float scale,
                    float softcap) {
  const int64_t group = nh / nkv;
  // Tasks: (span, query row, kv head, part of its group). The group is split only where there
  // would be too few tasks for the threads (one decoding sequence over few kv heads).
  std::vector<int64_t> first(spans.size() + 1, 0);  // each span's first task
  int64_t rows = 0, ctx = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    rows += spans[i].len;
    ctx = std::max(ctx, spans[i].past + spans[i].len);
  }
  int64_t parts = 1;
  while (parts < group && rows * nkv * parts < 4 * int64_t(omp_get_max_threads())) parts *= 2;
  parts = std::min(parts, group);
  const int64_t per_part = (group + parts - 1) / parts;
  parts = (group + per_part - 1) / per_part;
  for (size_t i = 0; i < spans.size(); ++i) first[i + 1] = first[i] + spans[i].len * nkv * parts;
  const int64_t tasks = first.back();
  const int64_t Q = nh * hd;
#pragma omp parallel if (tasks > 1)
  {
    std::vector<float> sc(size_t(per_part * ctx)), qt(size_t(hd * 8));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const size_t si =
          size_t(std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1);
      const AttentionSpan& sp = spans[si];
      const int64_t r = task - first[si];
      const int64_t t = r / (nkv * parts), kh = r / parts % nkv, part = r % parts;
      const int64_t p = sp.past + t;
      const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const int64_t h0 = kh * group + part * per_part;
      const int64_t h1 = std::min(kh * group + group, h0 + per_part);
      const int64_t at = sp.key * kv_stride + kh * head_stride;
      attend_heads(q + (sp.row + t) * Q, k + at, v + at, out + (sp.row + t) * Q, p, lo, h0, h1, hd,
                   kv_stride, scale, softcap, sc.data(), qt.data());
    }
  }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
               int64_t nh, int64_t nkv, int64_t hd, int64_t kv_stride, int64_t window, float scale,
               float softcap) {
  attention(q, k, v, out, {AttentionSpan{0, T, 0, pos0}}, nh, nkv, hd, kv_stride, hd, window, scale,
            softcap);
}

void attention(const float* q, const float* k, const float* v, float* out,
               const std::vector<AttentionSpan>& spans, int64_t nh, int64_t nkv, int64_t hd,
               int64_t kv_stride, int64_t head_stride, int64_t window, float scale, float softcap) {
  const int64_t group = nh / nkv;
  if (scale <= 0.0f) scale = 1.0f / std::sqrt(float(hd));
  // Prompt-length spans in blocks of query rows (kernels/attention_blocks.h), the rest (decoding
  // rows) one query row at a time (attention_rows).
  struct Block {
    const AttentionSpan* span;
    int64_t t0, t1, kh;
  };
  std::vector<Block> blocks;
  std::vector<AttentionSpan> rows_left;
  const int64_t per_block = attention_block_rows(group);
  for (const AttentionSpan& sp : spans) {
    if (sp.len < kBlockAttentionMinRows) {
      rows_left.push_back(sp);
      continue;
    }
    for (int64_t t0 = 0; t0 < sp.len; t0 += per_block)
      for (int64_t kh = 0; kh < nkv; ++kh)
        blocks.push_back({&sp, t0, std::min(sp.len, t0 + per_block), kh});
  }
  if (!blocks.empty()) {
    // Later blocks see more keys: taken last to first, so that the short ones fill in at the end.
    const int64_t nblocks = int64_t(blocks.size());
#pragma omp parallel if (nblocks > 1)
    {
      AttentionBlockScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = nblocks - 1; i >= 0; --i) {
        const Block& b = blocks[size_t(i)];
        attend_block(q, k, v, out, *b.span, b.t0, b.t1, b.kh, nh, nkv, hd, kv_stride, head_stride,
                     window, scale, softcap, scratch);
      }
    }
  }
  if (rows_left.empty()) return;
  attention_rows(q, k, v, out, rows_left, nh, nkv, hd, kv_stride, head_stride, window, scale,
                 softcap);
}

namespace {

// fn(i0, i1) over [0, n) in one range per thread (16-value multiples), or on this thread alone up
// to `serial` values. Elementwise loops are written as `omp simd` loops inside fn: as
// `omp parallel for simd` with an `if` that was false, GCC ran their scalar remainder loop for all
// of it (silu_mul of 8 x 5632 values in 136 us against 15, 2.5% of a serving step's time).
template <class Fn>
void parallel_ranges(int64_t n, int64_t serial, const Fn& fn) {
  if (n <= serial) return fn(int64_t(0), n);
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = ((n + nt - 1) / nt + 15) / 16 * 16, i0 = std::min(n, t * per);
    fn(i0, std::min(n, i0 + per));
  }
}

void silu_mul_range(const float* __restrict g, const float* __restrict u, float* __restrict out,
                    int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + fast_exp(-g[i])) * u[i];
}

void add_range(float* __restrict y, const float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
  parallel_ranges(
      n, 16384, [&](int64_t i0, int64_t i1) { silu_mul_range(g + i0, u + i0, out + i0, i1 - i0); });
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
  parallel_ranges(n, 65536, [&](int64_t i0, int64_t i1) { add_range(y + i0, x + i0, i1 - i0); });
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
