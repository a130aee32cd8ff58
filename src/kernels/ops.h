// The non-matmul kernels of the forward pass: plain loops the compiler vectorises (AVX-512 with
// -march=native), parallel over rows/heads with OpenMP. Shapes in comments; all F32.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lamina {

// y[n, d] = w[d] * x * rsqrt(mean(x^2) + eps), computed in F32 (as transformers' RMSNorm).
void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps);

// Rotate-half RoPE: x' = x*cos + rotate_half(x)*sin, angle = pos * inv_freq[i] for i < hd/2;
// in place on x[T, heads, hd] (rotate_half pairs i, i + hd/2) at positions pos[T], with the
// model's frequencies inv_freq[hd/2] (model/rope_frequencies.h: plain or scaled).
void rope(float* x, const int64_t* pos, int64_t T, int64_t heads, int64_t hd,
          const float* inv_freq);
// Plain RoPE's frequencies 1 / theta^(2i/hd), in F32 as transformers computes them.
std::vector<float> rope_default_inv_freq(int64_t hd, double theta);
// rope() with the plain frequencies.
void rope(float* x, const int64_t* pos, int64_t T, int64_t heads, int64_t hd, double theta);

// Causal grouped-query attention for T new queries at positions pos0 .. pos0+T-1.
// q[T, nh, hd]; k, v: cache rows [0, pos0+T) with row stride kv_stride (>= nkv*hd), kv head
// j serving query heads j*nh/nkv .. ; out[T, nh, hd]. Query at position p sees keys in
// (p - window, p] when window > 0, else [0, p]. Scores q·k times scale (0: 1/sqrt(hd)), then
// softcap · tanh(score / softcap) when softcap > 0 (Gemma 2); softmax in F32.
void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t pos0,
               int64_t nh, int64_t nkv, int64_t hd, int64_t kv_stride, int64_t window,
               float scale = 0.0f, float softcap = 0.0f);
// Rows [row, row + len) of q and out attend causally to keys [key, key + past + len) of k and v:
// `past` keys before them (a KV cache), then their own.
struct AttentionSpan {
  int64_t row = 0, len = 0, key = 0, past = 0;
};
// attention() over several spans in one parallel pass (sequences decoding together, packed
// sequences): q, out [rows, nh, hd]; positions restart at each span's `past`. Key j of kv head h
// at k + j * kv_stride + h * head_stride: rows [T, nkv, hd] (kv_stride nkv * hd, head_stride hd)
// or a cache [nkv, capacity, hd] (hd, capacity * hd).
void attention(const float* q, const float* k, const float* v, float* out,
               const std::vector<AttentionSpan>& spans, int64_t nh, int64_t nkv, int64_t hd,
               int64_t kv_stride, int64_t head_stride, int64_t window, float scale = 0.0f,
               float softcap = 0.0f);

// out[n] = silu(g[n]) * u[n]
void silu_mul(const float* g, const float* u, float* out, int64_t n);
// out[n] = gelu_tanh(g[n]) * u[n]: GeGLU with torch's tanh approximation (gelu_pytorch_tanh),
// 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))).
void gelu_tanh_mul(const float* g, const float* u, float* out, int64_t n);
// y[n] += x[n]
void add_inplace(float* y, const float* x, int64_t n);
// y[n] += a * x[n]
void axpy(float* y, float a, const float* x, int64_t n);
// rows[T, H] = table[ids[t], :], table F32 or BF16 [V, H]; ids are checked against V.
void embedding(const Tensor& table, const int32_t* ids, int64_t T, float* rows);
// In-place softmax over each row of x[n, d].
void softmax_rows(float* x, int64_t n, int64_t d);
// log_softmax(x)[target] for one row of d logits, stable.
double log_softmax_at(const float* x, int64_t d, int64_t target);
// Convert F32 to BF16 in parallel (large activations before an AMX matmul).
void to_bf16_parallel(const float* x, uint16_t* y, int64_t n);

}  // namespace lamina
