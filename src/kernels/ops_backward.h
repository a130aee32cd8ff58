// Backward of the forward kernels (ops.h), as plain function pairs: each takes the forward's
// inputs (or what it saved) and the gradient of its output, and accumulates input gradients.
#pragma once
#include <cstdint>

namespace lamina {

// y = w * x * r, r = rsqrt(mean(x^2) + eps), rows x[n, d].
// dx[n, d] = (gradient, overwritten); dw[d] += (accumulated).
// dw: accumulates the gain's gradient; null when the gain is frozen.
void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                      int64_t n, int64_t d, float eps);

// Backward of rope() is the rotation by the opposite angle, in place on dx[T, heads, hd].
void rope_backward(float* dx, const int64_t* pos, int64_t T, int64_t heads, int64_t hd,
                   const float* inv_freq);

// Attention backward for one sequence of T tokens at positions 0..T-1 (causal, GQA, window),
// recomputing the probabilities from q and k (nothing T x T is stored).
// q[T, nh, hd], k, v[T, nkv, hd], dout[T, nh, hd] -> dq (overwritten), dk, dv (overwritten).
// scale and softcap as attention() takes them.
void attention_backward(const float* q, const float* k, const float* v, const float* dout,
                        float* dq, float* dk, float* dv, int64_t T, int64_t nh, int64_t nkv,
                        int64_t hd, int64_t window, float scale = 0.0f, float softcap = 0.0f);

// out = silu(g) * u: dg, du (overwritten) from dout.
void silu_mul_backward(const float* g, const float* u, const float* dout, float* dg, float* du,
                       int64_t n);

// Backward of gelu_tanh_mul.
void gelu_tanh_mul_backward(const float* g, const float* u, const float* dout, float* dg, float* du,
                            int64_t n);

}  // namespace lamina
