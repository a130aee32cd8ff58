#include "model/decoder_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/ops_backward.h"
#include "model/rope_frequencies.h"

namespace lamina {

const Tensor& product_weight(const LayerWeights& lw, Product p, int64_t e) {
  switch (p) {
    case Product::kQ:
      return lw.wq;
    case Product::kK:
      return lw.wk;
    case Product::kV:
      return lw.wv;
    case Product::kO:
      return lw.wo;
    case Product::kGate:
      return lw.w_gate;
    case Product::kUp:
      return lw.w_up;
    case Product::kDown:
      return lw.w_down;
    case Product::kRouter:
      return lw.router;
    case Product::kExpertGate:
      return lw.e_gate.at(size_t(e));
    case Product::kExpertUp:
      return lw.e_up.at(size_t(e));
    case Product::kExpertDown:
      return lw.e_down.at(size_t(e));
  }
  fail("product_weight: unknown product");
}

const float* rmsnorm_gain(const ModelConfig& c, const Tensor& w, Buf& tmp) {
  if (!c.norm_plus_one) return w.f32();
  const int64_t n = w.numel();
  tmp.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) tmp[size_t(i)] = 1.0f + w.f32()[i];
  return tmp.data();
}

void LayerProducts::forward_shared_input(int64_t layer, std::span<const Product> ps, int64_t e,
                                         const float* x, int64_t M, std::span<float* const> ys,
                                         std::span<Buf* const> saved, int64_t row0, int64_t rows) {
  for (size_t i = 0; i < ps.size(); ++i)
    forward(layer, ps[i], e, x, M, ys[i], *saved[i], row0, rows);
}

void LayerProducts::backward(int64_t, Product, int64_t, const float*, int64_t, const float*, float*,
                             bool, const Buf&, int64_t) {
  fail("these layer products have no backward (inference)");
}

namespace {

float* sized(Buf& b, int64_t n) {
  b.resize(size_t(n));
  return b.data();
}

int64_t mlp_chunk(const LayerPass& pass) {
  return pass.mlp_chunk_rows > 0 ? std::min(pass.mlp_chunk_rows, pass.rows) : pass.rows;
}

bool counted(const LayerPass& pass, int64_t t) {
  return !pass.aux_mask || pass.aux_mask[t] != 0;
}

// h = act(g) * u, and its backward.
void act_mul(const ModelConfig& c, const float* g, const float* u, float* h, int64_t n) {
  if (c.hidden_act == Activation::GeluTanh) return gelu_tanh_mul(g, u, h, n);
  silu_mul(g, u, h, n);
}
void act_mul_backward(const ModelConfig& c, const float* g, const float* u, const float* dh,
                      float* dg, float* du, int64_t n) {
  if (c.hidden_act == Activation::GeluTanh) return gelu_tanh_mul_backward(g, u, dh, dg, du, n);
  silu_mul_backward(g, u, dh, dg, du, n);
}

// y[n, d] += b[d] on every row.
void add_bias(float* y, const Tensor& b, int64_t n, int64_t d) {
  for (int64_t r = 0; r < n; ++r) add_inplace(y + r * d, b.f32(), d);
}
// db[d] += sum over rows of dy[n, d].
void bias_grad(float* db, const float* dy, int64_t n, int64_t d) {
  if (!db) return;
  for (int64_t r = 0; r < n; ++r) add_inplace(db, dy + r * d, d);
}

// g, u, h [cn, I] of rows [r0, r0 + cn) of the dense MLP, from xn2.
void mlp_rows_forward(const LayerPass& pass, int64_t layer, LayerProducts& prod,
                      LayerActivations& s, int64_t r0, int64_t cn) {
  const int64_t H = pass.cfg->hidden_size, I = pass.cfg->intermediate_size, N = pass.rows;
  const float* xc = s.xn2.data() + r0 * H;
  float* g = sized(s.g, cn * I);
  float* u = sized(s.u, cn * I);
  float* h = sized(s.h, cn * I);
  const Product ps[] = {Product::kGate, Product::kUp};
  float* const ys[] = {g, u};
  Buf* const saved[] = {&s.saved[size_t(Product::kGate)], &s.saved[size_t(Product::kUp)]};
  prod.forward_shared_input(layer, ps, -1, xc, cn, ys, saved, r0, N);
  act_mul(*pass.cfg, g, u, h, cn * I);
}

// Mixtral's sparse MoE on xn2 [N, H], added into x: softmax over all E router logits (F32), top-k
// (torch.topk's order: larger first, ties to the lower index), the k weights renormalised to sum
// 1, x += sum_k weight_k * expert_k(xn2). Tokens are grouped per expert, so each expert runs one
// batched product over the tokens routed to it.
void moe_forward(const LayerPass& pass, int64_t layer, LayerProducts& prod, float* x,
                 LayerActivations& s) {
  const ModelConfig& c = *pass.cfg;
  const int64_t N = pass.rows, H = c.hidden_size, I = c.intermediate_size;
  const int64_t E = c.num_local_experts, K = c.num_experts_per_tok;
  float* pr = sized(s.probs, N * E);
  Buf none;
  prod.forward(layer, Product::kRouter, -1, s.xn2.data(), N, pr, none, 0, N);  // logits [N, E]
  softmax_rows(pr, N, E);
  s.topi.assign(size_t(N * K), 0);
  s.topw.assign(size_t(N * K), 0.f);
  s.experts.resize(size_t(E));
  for (ExpertActivations& ex : s.experts) ex.rows.clear(), ex.slot.clear();
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const float* p = pr + t * E;
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.f;
    for (int64_t j = 0; j < K; ++j) sum += p[idx[size_t(j)]];
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = idx[size_t(j)];
      s.topi[size_t(t * K + j)] = e;
      s.topw[size_t(t * K + j)] = p[e] / sum;
      s.experts[size_t(e)].rows.push_back(t);
      s.experts[size_t(e)].slot.push_back(j);
      if (pass.expert_count && counted(pass, t)) (*pass.expert_count)[size_t(e)]++;
    }
  }
  for (int64_t e = 0; e < E; ++e) {
    ExpertActivations& ex = s.experts[size_t(e)];
    const int64_t n = int64_t(ex.rows.size());
    if (!n) continue;
    float* xs = sized(ex.xs, n * H);  // the n tokens routed to expert e
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(s.xn2.data() + ex.rows[size_t(i)] * H, H, xs + i * H);
    float* g = sized(ex.g, n * I);
    float* u = sized(ex.u, n * I);
    float* h = sized(ex.h, n * I);
    float* y = sized(ex.y, n * H);
    const Product ps[] = {Product::kExpertGate, Product::kExpertUp};
    float* const ys[] = {g, u};
    Buf* const saved[] = {&ex.saved[0], &ex.saved[1]};
    prod.forward_shared_input(layer, ps, e, xs, n, ys, saved, 0, n);
    act_mul(c, g, u, h, n * I);
    prod.forward(layer, Product::kExpertDown, e, h, n, y, ex.saved[2], 0, n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = ex.rows[size_t(i)];
      axpy(x + t * H, s.topw[size_t(t * K + ex.slot[size_t(i)])], y + i * H, H);
    }
  }
}

// Backward of moe_forward: dx [N, H] is d x_out; writes d xn2 into dxn2.
void moe_backward(const LayerPass& pass, int64_t layer, LayerProducts& prod, LayerActivations& s,
                  const float* dx, float* dxn2, const RouterAuxLoss& aux, LayerGradScratch& gs) {
  const ModelConfig& c = *pass.cfg;
  const int64_t N = pass.rows, H = c.hidden_size, I = c.intermediate_size;
  const int64_t E = c.num_local_experts, K = c.num_experts_per_tok;
  std::fill(dxn2, dxn2 + N * H, 0.f);
  Buf dtopw(static_cast<size_t>(N * K), 0.f);
  for (int64_t e = 0; e < E; ++e) {
    ExpertActivations& ex = s.experts[size_t(e)];
    const int64_t n = int64_t(ex.rows.size());
    if (!n) continue;
    Buf dy(static_cast<size_t>(n * H)), dxs(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = ex.rows[size_t(i)], sl = ex.slot[size_t(i)];
      const float w = s.topw[size_t(t * K + sl)];
      double dot = 0;
      for (int64_t j = 0; j < H; ++j) {
        dy[size_t(i * H + j)] = w * dx[t * H + j];
        dot += double(dx[t * H + j]) * ex.y[size_t(i * H + j)];
      }
      dtopw[size_t(t * K + sl)] = float(dot);
    }
    float* dh = sized(gs.dh, n * I);
    prod.backward(layer, Product::kExpertDown, e, ex.h.data(), n, dy.data(), dh, false, ex.saved[2],
                  0);
    float* dg = sized(gs.dg, n * I);
    float* du = sized(gs.du, n * I);
    act_mul_backward(c, ex.g.data(), ex.u.data(), dh, dg, du, n * I);
    prod.backward(layer, Product::kExpertGate, e, ex.xs.data(), n, dg, dxs.data(), false,
                  ex.saved[0], 0);
    prod.backward(layer, Product::kExpertUp, e, ex.xs.data(), n, du, dxs.data(), true, ex.saved[1],
                  0);
    for (int64_t i = 0; i < n; ++i)
      add_inplace(dxn2 + ex.rows[size_t(i)] * H, dxs.data() + i * H, H);
  }
  // Router: w_k = p_k / S over the top-k; dp_k = (dw_k - sum_j w_j dw_j) / S. The aux loss adds
  // coef * E * count_e / R^2 to every counted row's dp_e. Then softmax backward to the logits.
  Buf dlogit(static_cast<size_t>(N * E));
  std::vector<double> dp(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const float* p = s.probs.data() + t * E;
    std::fill(dp.begin(), dp.end(), 0.0);
    double S = 0, wdw = 0;
    for (int64_t j = 0; j < K; ++j) {
      S += p[s.topi[size_t(t * K + j)]];
      wdw += double(s.topw[size_t(t * K + j)]) * dtopw[size_t(t * K + j)];
    }
    for (int64_t j = 0; j < K; ++j)
      dp[size_t(s.topi[size_t(t * K + j)])] = (dtopw[size_t(t * K + j)] - wdw) / S;
    for (int64_t e = 0; e < E && aux.expert_count && counted(pass, t); ++e)
      dp[size_t(e)] +=
          aux.coef * double(E) * double((*aux.expert_count)[size_t(e)]) / (aux.rows * aux.rows);
    double pdp = 0;
    for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[size_t(e)];
    for (int64_t e = 0; e < E; ++e) dlogit[size_t(t * E + e)] = float(p[e] * (dp[size_t(e)] - pdp));
  }
  Buf none;
  prod.backward(layer, Product::kRouter, -1, s.xn2.data(), N, dlogit.data(), dxn2, true, none, 0);
}

}  // namespace

void decoder_layer_forward(const LayerPass& pass, int64_t layer, const LayerWeights& lw,
                           LayerProducts& prod, float* x, LayerActivations& s,
                           const KeyValueRows* kv, bool dense_mlp) {
  const ModelConfig& c = *pass.cfg;
  const int64_t N = pass.rows, H = c.hidden_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Q = nh * hd, KV = nkv * hd, window = c.window_of(layer);
  const float eps = float(c.rms_norm_eps);
  const float* inv_freq = c.local_rope(layer) ? pass.inv_freq_local : pass.inv_freq;
  Buf gb;
  // Attention half: xmid = x + o_proj(attention(rope(q), rope(k), v)) over rmsnorm(x).
  s.x.assign(x, x + N * H);
  float* xn1 = sized(s.xn1, N * H);
  rmsnorm(s.x.data(), rmsnorm_gain(c, lw.attn_norm, gb), xn1, N, H, eps);
  float* q = sized(s.q, N * Q);  // [N, nh, hd]
  // The new rows [N, nkv, hd], then (inference) copied per head into the cache [nkv, capacity, hd].
  float* k = sized(s.k, N * KV);
  float* v = sized(s.v, N * KV);
  {
    const Product ps[] = {Product::kQ, Product::kK, Product::kV};
    float* const ys[] = {q, k, v};
    Buf* const saved[] = {&s.saved[size_t(Product::kQ)], &s.saved[size_t(Product::kK)],
                          &s.saved[size_t(Product::kV)]};
    prod.forward_shared_input(layer, ps, -1, xn1, N, ys, saved, 0, N);
  }
  if (c.qkv_bias) {
    add_bias(q, lw.bq, N, Q);
    add_bias(k, lw.bk, N, KV);
    add_bias(v, lw.bv, N, KV);
  }
  if (c.qk_norm) {  // Qwen3: each head's query and key RMS-normalised over its hd values
    s.q_raw.assign(q, q + N * Q);
    s.k_raw.assign(k, k + N * KV);
    rmsnorm(q, rmsnorm_gain(c, lw.q_norm, gb), q, N * nh, hd, eps);
    rmsnorm(k, rmsnorm_gain(c, lw.k_norm, gb), k, N * nkv, hd, eps);
  }
  rope(q, pass.positions, N, nh, hd, inv_freq);
  rope(k, pass.positions, N, nkv, hd, inv_freq);
  if (const float af = rope_attention_factor(c, c.local_rope(layer)); af != 1.0f) {  // yarn
    for (int64_t i = 0; i < N * Q; ++i) q[i] *= af;
    for (int64_t i = 0; i < N * KV; ++i) k[i] *= af;
  }
  float* att = sized(s.att, N * Q);
  if (kv) {
    const int64_t cap = kv->capacity;
    for (int64_t i = 0; i < N; ++i) {
      const int64_t at = kv->dest ? kv->dest[i] : kv->row0 + i;
      for (int64_t h = 0; h < nkv; ++h) {
        std::memcpy(kv->k + (h * cap + at) * hd, k + i * KV + h * hd, size_t(hd) * sizeof(float));
        std::memcpy(kv->v + (h * cap + at) * hd, v + i * KV + h * hd, size_t(hd) * sizeof(float));
      }
    }
    attention(q, kv->k, kv->v, att, pass.spans, nh, nkv, hd, hd, cap * hd, window,
              float(c.attn_scale), float(c.attn_softcap));
  } else {  // training: the pass's own rows
    attention(q, k, v, att, pass.spans, nh, nkv, hd, KV, hd, window, float(c.attn_scale),
              float(c.attn_softcap));
  }
  float* xmid = sized(s.xmid, N * H);
  // Gemma: xmid = x + rmsnorm(o_proj(...)), the output's own norm (sandwich).
  float* o = c.sandwich_norms ? sized(s.o_raw, N * H) : xmid;
  prod.forward(layer, Product::kO, -1, att, N, o, s.saved[size_t(Product::kO)], 0, N);
  if (c.o_bias) add_bias(o, lw.bo, N, H);
  if (c.sandwich_norms) rmsnorm(o, rmsnorm_gain(c, lw.post_attn_norm, gb), xmid, N, H, eps);
  add_inplace(xmid, s.x.data(), N * H);
  // MLP half: x_out = xmid + mlp(rmsnorm(xmid)) (Gemma: + rmsnorm(mlp(...))).
  float* xn2 = sized(s.xn2, N * H);
  rmsnorm(xmid, rmsnorm_gain(c, lw.mlp_norm, gb), xn2, N, H, eps);
  std::memcpy(x, xmid, size_t(N * H) * sizeof(float));
  if (c.is_moe()) return moe_forward(pass, layer, prod, x, s);
  // The backward's rerun skips the MLP, except where the backward needs its output (the post
  // norm's input) for every row before its chunks.
  if (!dense_mlp && !c.sandwich_norms) return;
  const int64_t mc = mlp_chunk(pass);
  float* out = sized(s.y_dense, N * H);
  for (int64_t r0 = 0; r0 < N; r0 += mc) {
    const int64_t cn = std::min(mc, N - r0);
    mlp_rows_forward(pass, layer, prod, s, r0, cn);
    prod.forward(layer, Product::kDown, -1, s.h.data(), cn, out + r0 * H,
                 s.saved[size_t(Product::kDown)], r0, N);
  }
  if (c.sandwich_norms) {
    Buf normed(static_cast<size_t>(N * H));
    rmsnorm(out, rmsnorm_gain(c, lw.post_mlp_norm, gb), normed.data(), N, H, eps);
    return add_inplace(x, normed.data(), N * H);
  }
  add_inplace(x, out, N * H);
}

void decoder_layer_backward(const LayerPass& pass, int64_t layer, const LayerWeights& lw,
                            LayerProducts& prod, LayerActivations& s, float* dx,
                            const LayerVectorGrads& vg, const RouterAuxLoss& aux,
                            LayerGradScratch& gs) {
  const ModelConfig& c = *pass.cfg;
  const int64_t N = pass.rows, H = c.hidden_size, I = c.intermediate_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Q = nh * hd, KV = nkv * hd, window = c.window_of(layer);
  const float eps = float(c.rms_norm_eps);
  const float* inv_freq = c.local_rope(layer) ? pass.inv_freq_local : pass.inv_freq;
  Buf& gb = gs.gain;
  // MLP half: x_out = xmid + mlp(xn2); dx is d x_out. Gemma: + rmsnorm(mlp(xn2)), whose
  // backward gives d mlp(xn2) first.
  const float* dmlp = dx;
  if (c.sandwich_norms) {
    float* dy = sized(gs.dy, N * H);
    rmsnorm_backward(s.y_dense.data(), rmsnorm_gain(c, lw.post_mlp_norm, gb), dx, dy,
                     vg.post_mlp_norm, N, H, eps);
    dmlp = dy;
  }
  float* dxn2 = sized(gs.dxn, N * H);
  if (c.is_moe()) {
    moe_backward(pass, layer, prod, s, dx, dxn2, aux, gs);
  } else {
    const int64_t mc = mlp_chunk(pass);
    Buf& saved_down = s.saved[size_t(Product::kDown)];
    for (int64_t r0 = 0; r0 < N; r0 += mc) {
      const int64_t cn = std::min(mc, N - r0);
      const float* xc = s.xn2.data() + r0 * H;
      if (pass.recompute_mlp) {  // g, u, h of these rows again, and the down product's state
        mlp_rows_forward(pass, layer, prod, s, r0, cn);
        prod.forward(layer, Product::kDown, -1, s.h.data(), cn, nullptr, saved_down, r0, N);
      }
      float* dh = sized(gs.dh, cn * I);
      prod.backward(layer, Product::kDown, -1, s.h.data(), cn, dmlp + r0 * H, dh, false, saved_down,
                    r0);
      float* dg = sized(gs.dg, cn * I);
      float* du = sized(gs.du, cn * I);
      act_mul_backward(c, s.g.data(), s.u.data(), dh, dg, du, cn * I);
      prod.backward(layer, Product::kGate, -1, xc, cn, dg, dxn2 + r0 * H, false,
                    s.saved[size_t(Product::kGate)], r0);
      prod.backward(layer, Product::kUp, -1, xc, cn, du, dxn2 + r0 * H, true,
                    s.saved[size_t(Product::kUp)], r0);
    }
  }
  // d xmid = dx (residual) + the norm's backward of d xn2.
  float* dtmp = sized(gs.dtmp, N * H);
  rmsnorm_backward(s.xmid.data(), rmsnorm_gain(c, lw.mlp_norm, gb), dxn2, dtmp, vg.mlp_norm, N, H,
                   eps);
  add_inplace(dx, dtmp, N * H);
  // Attention half: xmid = x + att Wo^T (+ bo) (Gemma: x + rmsnorm(att Wo^T)).
  const float* dout = dx;
  if (c.sandwich_norms) {
    float* dy = sized(gs.dy, N * H);
    rmsnorm_backward(s.o_raw.data(), rmsnorm_gain(c, lw.post_attn_norm, gb), dx, dy,
                     vg.post_attn_norm, N, H, eps);
    dout = dy;
  }
  if (c.o_bias) bias_grad(vg.bo, dout, N, H);
  float* datt = sized(gs.datt, N * Q);
  prod.backward(layer, Product::kO, -1, s.att.data(), N, dout, datt, false,
                s.saved[size_t(Product::kO)], 0);
  float* dq = sized(gs.dq, N * Q);
  float* dk = sized(gs.dk, N * KV);
  float* dv = sized(gs.dv, N * KV);
  for (const AttentionSpan& sp : pass.spans) {
    LAMINA_CHECK(sp.key == sp.row && sp.past == 0,
                 "attention backward: spans over a key/value cache have no backward");
    attention_backward(s.q.data() + sp.row * Q, s.k.data() + sp.row * KV, s.v.data() + sp.row * KV,
                       datt + sp.row * Q, dq + sp.row * Q, dk + sp.row * KV, dv + sp.row * KV,
                       sp.len, nh, nkv, hd, window, float(c.attn_scale), float(c.attn_softcap));
  }
  if (const float af = rope_attention_factor(c, c.local_rope(layer)); af != 1.0f) {
    for (int64_t i = 0; i < N * Q; ++i) dq[i] *= af;
    for (int64_t i = 0; i < N * KV; ++i) dk[i] *= af;
  }
  rope_backward(dq, pass.positions, N, nh, hd, inv_freq);
  rope_backward(dk, pass.positions, N, nkv, hd, inv_freq);
  if (c.qk_norm) {     // back through the per-head norms, to q and k as projected
    Buf& t = gs.dtmp;  // d xmid's part is spent
    t.resize(size_t(std::max(Q, KV) * N));
    rmsnorm_backward(s.q_raw.data(), rmsnorm_gain(c, lw.q_norm, gb), dq, t.data(), vg.q_norm,
                     N * nh, hd, eps);
    std::copy_n(t.data(), N * Q, dq);
    rmsnorm_backward(s.k_raw.data(), rmsnorm_gain(c, lw.k_norm, gb), dk, t.data(), vg.k_norm,
                     N * nkv, hd, eps);
    std::copy_n(t.data(), N * KV, dk);
  }
  if (c.qkv_bias) {
    bias_grad(vg.bq, dq, N, Q);
    bias_grad(vg.bk, dk, N, KV);
    bias_grad(vg.bv, dv, N, KV);
  }
  float* dxn1 = sized(gs.dxn, N * H);  // d xn2 is spent: its buffer is reused
  prod.backward(layer, Product::kQ, -1, s.xn1.data(), N, dq, dxn1, false,
                s.saved[size_t(Product::kQ)], 0);
  prod.backward(layer, Product::kK, -1, s.xn1.data(), N, dk, dxn1, true,
                s.saved[size_t(Product::kK)], 0);
  prod.backward(layer, Product::kV, -1, s.xn1.data(), N, dv, dxn1, true,
                s.saved[size_t(Product::kV)], 0);
  dtmp = sized(gs.dtmp, N * H);
  rmsnorm_backward(s.x.data(), rmsnorm_gain(c, lw.attn_norm, gb), dxn1, dtmp, vg.attn_norm, N, H,
                   eps);
  add_inplace(dx, dtmp, N * H);
}

}  // namespace lamina
