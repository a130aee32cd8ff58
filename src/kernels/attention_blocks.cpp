#include "kernels/attention_blocks.h"

#include <dnnl.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/fast_math.h"

namespace lamina {
namespace {

constexpr int64_t kKeysPerBlock = 256;  // scores of 256 rows x 256 keys: 256 KiB

// C[M, N] = alpha · A[M, K] · op(B) + beta · C, row-major (op(B) = B^T, B stored [N, K], when
// tb). Called inside the parallel region: oneDNN runs it on this thread alone.
void sgemm(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const dnnl_status_t st =
      dnnl_sgemm('N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success) std::abort();  // only for arguments this file never passes
}

}  // namespace

int64_t attention_block_rows(int64_t group) {
  return std::max<int64_t>(1, 256 / std::max<int64_t>(1, group));
}

void attend_block(const float* q, const float* k, const float* v, float* out,
                  const AttentionSpan& sp, int64_t t0, int64_t t1, int64_t kh, int64_t nh,
                  int64_t nkv, int64_t hd, int64_t kv_stride, int64_t head_stride, int64_t window,
                  float scale, float softcap, AttentionBlockScratch& scratch) {
  // Row r of the block is query position t0 + r / G, head kh · G + r % G: the group's heads of
  // one position are adjacent in q and out, so the block is (t1 - t0) runs of G · hd floats.
  const int64_t G = nh / nkv, R = (t1 - t0) * G, Q = nh * hd, run = G * hd;
  scratch.q.resize(size_t(R * hd));
  scratch.o.assign(size_t(R * hd), 0.0f);
  scratch.m.assign(size_t(R), -INFINITY);
  scratch.l.assign(size_t(R), 0.0f);
  float *qb = scratch.q.data(), *o = scratch.o.data(), *m = scratch.m.data(), *l = scratch.l.data();
  for (int64_t t = t0; t < t1; ++t)
    std::memcpy(qb + (t - t0) * run, q + (sp.row + t) * Q + kh * run, size_t(run) * sizeof(float));
  const float* kb = k + sp.key * kv_stride + kh * head_stride;
  const float* vb = v + sp.key * kv_stride + kh * head_stride;
  const int64_t p0 = sp.past + t0, p1 = sp.past + t1 - 1;  // the block's first and last position
  const int64_t lo = window > 0 ? std::max<int64_t>(0, p0 - window + 1) : 0;
  for (int64_t j0 = lo; j0 <= p1; j0 += kKeysPerBlock) {
    const int64_t nk = std::min(kKeysPerBlock, p1 + 1 - j0);
    scratch.s.resize(size_t(R * nk));
    float* s = scratch.s.data();
    sgemm(true, R, nk, hd, scale, qb, hd, kb + j0 * kv_stride, kv_stride, 0.0f, s, nk);
    for (int64_t r = 0; r < R; ++r) {
      // Keys [a, b] of this block are the row's: (p - window, p] or [0, p]; the rest weigh 0.
      const int64_t p = p0 + r / G;
      const int64_t a = std::max(j0, window > 0 ? p - window + 1 : 0) - j0,
                    b = std::min(j0 + nk - 1, p) - j0;
      float* sr = s + r * nk;
      if (b < a) {
        std::fill(sr, sr + nk, 0.0f);
        continue;
      }
      if (softcap > 0.0f)
        for (int64_t j = a; j <= b; ++j) sr[j] = softcap * std::tanh(sr[j] / softcap);
      float mx = m[r];
#pragma omp simd reduction(max : mx)
      for (int64_t j = a; j <= b; ++j) mx = mx > sr[j] ? mx : sr[j];
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = a; j <= b; ++j) {
        const float e = fast_exp(sr[j] - mx);
        sr[j] = e;
        sum += e;
      }
      std::fill(sr, sr + a, 0.0f);
      std::fill(sr + b + 1, sr + nk, 0.0f);
      if (m[r] != -INFINITY && m[r] != mx) {  // earlier blocks' sums to the new maximum
        const float c = fast_exp(m[r] - mx);
        l[r] *= c;
        for (int64_t i = 0; i < hd; ++i) o[r * hd + i] *= c;
      }
      m[r] = mx;
      l[r] += sum;
    }
    sgemm(false, R, hd, nk, 1.0f, s, nk, vb + j0 * kv_stride, kv_stride, 1.0f, o, hd);
  }
  for (int64_t r = 0; r < R; ++r) {  // every row saw its own key: l[r] > 0
    float* dst = out + (sp.row + t0 + r / G) * Q + kh * run + (r % G) * hd;
    const float inv = 1.0f / l[r];
    for (int64_t i = 0; i < hd; ++i) dst[i] = o[r * hd + i] * inv;
  }
}

}  // namespace lamina
