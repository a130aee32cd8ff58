#include "train/train_graph.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <unordered_set>

#include "core/error.h"
#include "kernels/fast_math.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/ops_backward.h"
#include "kernels/widened_matmul.h"
#include "model/rope_frequencies.h"

namespace lamina {

Batch Batch::language_model(const std::vector<std::vector<int32_t>>& rows) {
  Batch b;
  b.B = int64_t(rows.size());
  b.T = rows.empty() ? 0 : int64_t(rows[0].size()) - 1;
  for (auto& r : rows) {
    if (int64_t(r.size()) != b.T + 1) fail("language-model batch: rows of different lengths");
    b.tokens.insert(b.tokens.end(), r.begin(), r.end() - 1);
    b.targets.insert(b.targets.end(), r.begin() + 1, r.end());
  }
  b.weights.assign(b.tokens.size(), 1.0f);
  return b;
}

int64_t Batch::num_targets() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
}

namespace {

using Buf = std::vector<float>;
float* sized(Buf& b, int64_t n) {
  b.resize(size_t(n));
  return b.data();
}

// y[M, N] = x[M, K] W^T with W [N, K]; backward: dx (+)= dy W, dW += dy^T x.
// With a BF16 W under bf16 compute (mixed precision) x and dy are rounded to bf16 for the
// products. A frozen base kept narrower than the compute type (--base-dtype: bf16 under F32
// compute, f16, or ggml blocks) is multiplied in F32 over rows widened a slab at a time. Every
// product accumulates and writes F32.
bool widened(DType compute, const Tensor& W) {
  return W.dtype != DType::F32 && !(W.dtype == DType::BF16 && compute == DType::BF16);
}
void linear_fwd(DType compute, const float* x, int64_t M, const Tensor& W, float* y) {
  if (widened(compute, W)) return linear_widened(x, M, W, y, false);
  linear(x, M, W, y);
}
void linear_bwd(DType compute, const float* x, int64_t M, const Tensor& W, const Tensor* dW,
                const float* dy, float* dx, bool accumulate_dx) {
  const int64_t N = W.shape[0], K = W.shape[1];
  float* gw = dW ? const_cast<float*>(dW->f32()) : nullptr;  // null: frozen, no weight gradient
  if (widened(compute, W)) {
    LAMINA_CHECK(!gw, "a frozen base weight (", dtype_name(W.dtype), ") has no weight gradient");
    if (dx) linear_widened_dx(dy, M, W, dx, accumulate_dx);
    return;
  }
  if (W.dtype == DType::BF16) {
    thread_local std::vector<uint16_t> xb, dyb;
    xb.resize(size_t(M * K));
    dyb.resize(size_t(M * N));
    to_bf16_parallel(x, xb.data(), M * K);
    to_bf16_parallel(dy, dyb.data(), M * N);
    if (dx)
      gemm_bf16(false, false, M, K, N, dyb.data(), N, W.as<uint16_t>(), K, dx, K, accumulate_dx);
    if (gw) gemm_bf16(true, false, N, K, M, dyb.data(), N, xb.data(), K, gw, K, true);
    return;
  }
  if (dx) gemm(false, false, M, K, N, dy, N, W.f32(), K, dx, K, accumulate_dx);
  if (gw) gemm(true, false, N, K, M, dy, N, x, K, gw, K, true);
}

struct ExpertActs {
  std::vector<int64_t> rows;       // tokens routed here
  std::vector<int64_t> slot;       // which of the token's top-k slots
  Buf xs, g, u, h, y;              // [n, H], [n, I] x3, [n, H]
  Buf lora_t[kExpertLoraTargets];  // xs · A^T (w1, w3) and h · A^T (w2) when adapted [n, r]
};

struct LayerActs {
  Buf x, xn1, q, k, v, att, xmid, xn2, g, u, h;
  Buf lora_t[kLoraTargets];   // x · A^T of each adapted projection [N, r]
  Buf probs;                  // MoE router softmax [N, E]
  std::vector<int64_t> topi;  // [N, K]
  Buf topw;                   // renormalised weights [N, K]
  std::vector<ExpertActs> experts;
};

}  // namespace

struct TrainGraph::Acts {
  std::vector<LayerActs> layers;
  LayerActs scratch;                         // recomputation: the one layer being worked on
  std::vector<Buf> xin;                      // recomputation: each layer's input [N, H]
  std::vector<std::vector<uint16_t>> xin16;  // the same rounded to bf16 (set_recompute_bf16_inputs)
  std::vector<double> expert_psum;  // MoE: router probabilities summed per expert over all layers
  Buf xf, xnf, dx, dtmp, dxn, dq, dk, dv, datt, dh, dg, du, chunk, dchunk;
  std::vector<int64_t> pos;
  std::vector<int64_t> expert_count;  // MoE: (token, slot) pairs per expert over all layers
};

TrainGraph::TrainGraph(ParamStore& p) : p_(p), a_(new Acts) {}
TrainGraph::~TrainGraph() {
  delete a_;
}

StepStats TrainGraph::step(const Batch& b, double normalizer, double aux_coef, bool backward,
                           const Reweight& reweight) {
  const ModelConfig& c = p_.cfg;
  const ModelWeights& W = p_.compute;  // F32 masters, or their bf16 copies
  const ModelWeights& G = p_.grad_views;
  const DType cd = p_.compute_dtype;
  const int64_t B = b.B, T = b.T, N = B * T, H = c.hidden_size, I = c.intermediate_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Q = nh * hd, KV = nkv * hd, V = c.vocab_size, L = c.num_hidden_layers;
  const int64_t E = c.num_local_experts, K = c.num_experts_per_tok;
  const int64_t window = c.sliding_window.value_or(0);
  const float eps = float(c.rms_norm_eps);
  if (int64_t(b.tokens.size()) != N || int64_t(b.targets.size()) != N ||
      int64_t(b.weights.size()) != N)
    fail("batch: tokens, targets and weights must hold B*T entries");
  if (T > c.max_position_embeddings)
    fail("sequence length ", T, " exceeds max_position_embeddings ", c.max_position_embeddings);
  if (normalizer <= 0) normalizer = 1;
  Acts& a = *a_;
  // Frozen tensors get no weight gradient (the product is skipped).
  std::unordered_set<const void*> frozen;
  for (size_t i = 0; i < p_.specs.size(); ++i)
    if (!p_.trainable[i] && p_.has_grad(i)) frozen.insert(p_.grad(i));
  // No gradient view (compacted away) or frozen: the weight-gradient product is skipped.
  auto grad_of = [&](const Tensor& g) -> const Tensor* {
    return !g.defined() || frozen.count(g.data) ? nullptr : &g;
  };
  auto grad_ptr = [&](const Tensor& g) {
    return grad_of(g) ? const_cast<float*>(g.f32()) : nullptr;
  };
  // An expert's gradient view (a frozen layer's expert list is empty: nothing was bound).
  auto expert_grad = [&](const std::vector<Tensor>& v, int64_t e) -> const Tensor* {
    return size_t(e) < v.size() ? grad_of(v[size_t(e)]) : nullptr;
  };
  // A projection y = x W^T, plus LoRA's lp.scale · (x A^T) B^T when the layer has an adapter there.
  // LoRA dropout (training only) on the adapter's input; the mask is a hash of (step key, layer,
  // projection, element), so recomputation and resumed runs draw the same one.
  const float drop = backward ? float(p_.lora_dropout) : 0.0f;
  const uint64_t key = dropout_key_;
  auto keep = [&](int64_t layer, int tgt, int64_t i) {
    uint64_t z = key ^ (uint64_t(layer) * 0x9E3779B97F4A7C15ull) ^ (uint64_t(tgt) << 56) ^
                 uint64_t(i) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
    z ^= z >> 29;
    return double(z >> 11) / 9007199254740992.0 >= drop;
  };
  // x [n] (row0: the element index of x[0] in the whole tensor, so row chunks draw the same mask).
  auto lora_input = [&](const float* x, int64_t n, int64_t layer, int tgt, Buf& xd,
                        int64_t off = 0) -> const float* {
    if (drop <= 0) return x;
    float* o = sized(xd, n);
    const float sc = 1.0f / (1.0f - drop);
    for (int64_t i = 0; i < n; ++i) o[i] = keep(layer, tgt, off + i) ? x[i] * sc : 0.0f;
    return o;
  };
  int64_t cur_layer = 0;
  // The adapter's path of a projection over rows [row0, row0 + M) of a tensor of `rows` rows:
  // t = x A^T is saved at row0 in tsave [rows, r] (sized when row0 == 0) and, when y is given,
  // y += lp.scale · t B^T. key tells the projection apart in the dropout masks (LoraTarget for
  // attention / dense MLP, kLoraTargets + 3 e + t for expert e's w1/w2/w3).
  auto lora_path = [&](const float* x, int64_t M, int64_t K, const LoraPair& lp, int key,
                       Buf& tsave, float* y, int64_t row0, int64_t rows) {
    if (!lp.a.defined()) return;
    const int64_t r = lp.a.shape[0], out = lp.b.shape[0];
    if (row0 == 0) tsave.resize(size_t(rows * r));
    float* t = tsave.data() + row0 * r;
    Buf xd;
    linear_fwd(cd, lora_input(x, M * K, cur_layer, key, xd, row0 * K), M, lp.a, t);
    if (!y) return;
    Buf tmp(static_cast<size_t>(M * out));
    linear_fwd(cd, t, M, lp.b, tmp.data());
    axpy(y, lp.scale, tmp.data(), M * out);
  };
  // y = x Wt^T (+ LoRA's lp when bound), rows [row0, row0 + M) of `rows` (all of them by default).
  auto lora_fwd = [&](const float* x, int64_t M, const Tensor& Wt, const LoraPair& lp, int key,
                      Buf& tsave, float* y, int64_t row0 = 0, int64_t rows = -1) {
    linear_fwd(cd, x, M, Wt, y);
    lora_path(x, M, Wt.shape[1], lp, key, tsave, y, row0, rows < 0 ? M : rows);
  };
  // Backward of lora_fwd over the same rows: dx (+)= dy Wt (+ the adapter's path); gradients of Wt
  // (when trainable) and of the adapter (lg, the gradient views of lp), added to.
  auto lora_bwd = [&](const float* x, int64_t M, const Tensor& Wt, const Tensor* dWt,
                      const LoraPair& lp, const LoraPair* lg, int key, const Buf& tsave,
                      const float* dy, float* dx, bool acc, int64_t row0 = 0) {
    linear_bwd(cd, x, M, Wt, dWt, dy, dx, acc);
    if (!lp.a.defined()) return;
    const Tensor* dA = lg ? grad_of(lg->a) : nullptr;
    const Tensor* dB = lg ? grad_of(lg->b) : nullptr;
    const int64_t r = lp.a.shape[0], out = Wt.shape[0];
    const float* t = tsave.data() + row0 * r;
    Buf dys(dy, dy + M * out), dt(static_cast<size_t>(M * r));
    for (auto& v : dys) v *= lp.scale;
    linear_bwd(cd, t, M, lp.b, dB, dys.data(), dt.data(), false);
    if (drop <= 0) {
      linear_bwd(cd, x, M, lp.a, dA, dt.data(), dx, true);
      return;
    }
    // Through the dropout: dA from the dropped input, dx masked and rescaled.
    const int64_t K = Wt.shape[1];
    Buf xd, dxl(static_cast<size_t>(M * K));
    linear_bwd(cd, lora_input(x, M * K, cur_layer, key, xd, row0 * K), M, lp.a, dA, dt.data(),
               dxl.data(), false);
    const float sc = 1.0f / (1.0f - drop);
    for (int64_t i = 0; i < M * K; ++i)
      if (keep(cur_layer, key, row0 * K + i)) dx[i] += dxl[size_t(i)] * sc;
  };
  auto proj_fwd = [&](const float* x, int64_t M, const LayerWeights& lw, const Tensor& Wt, int tgt,
                      Buf& tsave, float* y, int64_t row0 = 0, int64_t rows = -1) {
    lora_fwd(x, M, Wt, lw.lora[tgt], tgt, tsave, y, row0, rows);
  };
  auto proj_bwd = [&](const float* x, int64_t M, const LayerWeights& lw, const LayerWeights& lg,
                      const Tensor& Wt, const Tensor& dWt, int tgt, const Buf& tsave,
                      const float* dy, float* dx, bool acc, int64_t row0 = 0) {
    lora_bwd(x, M, Wt, grad_of(dWt), lw.lora[tgt], &lg.lora[tgt], tgt, tsave, dy, dx, acc, row0);
  };
  // Expert e's adapter on projection t (w1/w2/w3), or an unbound pair.
  static const LoraPair kNoLora;
  auto expert_lora = [](const LayerWeights& lw, int t, int64_t e) -> const LoraPair& {
    return size_t(e) < lw.e_lora[t].size() ? lw.e_lora[t][size_t(e)] : kNoLora;
  };
  auto expert_key = [](int t, int64_t e) { return int(kLoraTargets + 3 * e + t); };
  a.pos.resize(size_t(N));
  // Attention runs per segment: a packed row holds several conversations, each attending only
  // to itself with positions restarting at 0 (block-diagonal causal mask).
  std::vector<std::pair<int64_t, int64_t>> segs;  // (first row, length)
  for (int64_t bi = 0; bi < B; ++bi) {
    std::vector<int32_t> lens = b.segments.empty() || b.segments[size_t(bi)].empty()
                                    ? std::vector<int32_t>{int32_t(T)}
                                    : b.segments[size_t(bi)];
    int64_t at = bi * T, total = 0;
    for (int32_t len : lens) {
      if (len <= 0) fail("batch: segment lengths must be positive");
      segs.push_back({at, len});
      for (int64_t i = 0; i < len; ++i) a.pos[size_t(at + i)] = i;
      at += len, total += len;
    }
    if (total != T) fail("batch: segment lengths of row ", bi, " add up to ", total, ", not ", T);
  }

  // ---- forward ----
  Buf x0;
  float* x = sized(x0, N * H);
  embedding(p_.weights.embed, b.tokens.data(), N, x);  // [N, H], from the F32 masters
  a.expert_count.assign(size_t(E), 0);
  // The positions the load-balancing loss counts (padding is left out, as transformers does).
  if (!b.aux_mask.empty() && int64_t(b.aux_mask.size()) != N)
    fail("batch: aux_mask has ", b.aux_mask.size(), " positions, not ", N);
  auto aux_counts = [&](int64_t t) { return b.aux_mask.empty() || b.aux_mask[size_t(t)] != 0; };
  const int64_t aux_rows =
      b.aux_mask.empty()
          ? N
          : std::max<int64_t>(1, std::count(b.aux_mask.begin(), b.aux_mask.end(), 1));
  // Dense MLP rows per chunk. Without recomputation every layer keeps g, u, h whole. With it the
  // backward recomputes them a chunk of rows at a time from xn2 (the rerun skips the MLP), so g, u,
  // h and their gradients exist for one chunk only: 6 x 1024 x 14336 floats (0.35 GB) become
  // 6 x 256 x 14336 (0.09 GB) at 1024 tokens of Mistral 7B, and the rerun's down product is saved.
  // Each chunk widens the frozen gate/up/down slabs again and runs its products at a smaller M
  // (the input gradient's falls to ~half the F32 rate at 146 rows), so chunks are ~4M floats of
  // the intermediate width, >= 64 rows, and all of one size (1024 tokens: 4 of 256, not 3 + 1).
  const int64_t mc = [&]() -> int64_t {
    if (!recompute_) return N;
    const int64_t want =
        mlp_chunk_rows_ > 0 ? mlp_chunk_rows_ : std::max<int64_t>(64, (int64_t(1) << 22) / I);
    if (mlp_chunk_rows_ > 0) return std::min(N, want);
    const int64_t n = (N + want - 1) / want;
    return (N + n - 1) / n;
  }();
  // g, u, h [cn, I] of rows [r0, r0 + cn) of the dense MLP (the adapters' t saved at r0).
  auto mlp_rows_fwd = [&](const LayerWeights& lw, LayerActs& s, int64_t r0, int64_t cn) {
    const float* xc = s.xn2.data() + r0 * H;
    float* g = sized(s.g, cn * I);
    float* u = sized(s.u, cn * I);
    float* h = sized(s.h, cn * I);
    proj_fwd(xc, cn, lw, lw.w_gate, kLoraGate, s.lora_t[kLoraGate], g, r0, N);
    proj_fwd(xc, cn, lw, lw.w_up, kLoraUp, s.lora_t[kLoraUp], u, r0, N);
    silu_mul(g, u, h, cn * I);
  };
  // One decoder layer forward: x [N, H] in place from the layer's input to its output, saving in s
  // what backward needs. count: add to the MoE routing counts (not when recomputing). dense_mlp:
  // false in the backward's rerun, which recomputes the dense MLP itself in row chunks.
  auto layer_fwd = [&](int64_t l, float* x, LayerActs& s, bool count, bool dense_mlp) {
    const LayerWeights& lw = W.layers[size_t(l)];
    cur_layer = l;
    s.x.assign(x, x + N * H);
    float* xn1 = sized(s.xn1, N * H);
    rmsnorm(s.x.data(), lw.attn_norm.f32(), xn1, N, H, eps);
    float* q = sized(s.q, N * Q);
    float* k = sized(s.k, N * KV);
    float* v = sized(s.v, N * KV);
    proj_fwd(xn1, N, lw, lw.wq, kLoraQ, s.lora_t[kLoraQ], q);
    proj_fwd(xn1, N, lw, lw.wk, kLoraK, s.lora_t[kLoraK], k);
    proj_fwd(xn1, N, lw, lw.wv, kLoraV, s.lora_t[kLoraV], v);
    const std::vector<float> inv_freq = rope_inv_freq(c);
    rope(q, a.pos.data(), N, nh, hd, inv_freq.data());
    rope(k, a.pos.data(), N, nkv, hd, inv_freq.data());
    float* att = sized(s.att, N * Q);
    for (auto [r0, len] : segs)
      attention(q + r0 * Q, k + r0 * KV, v + r0 * KV, att + r0 * Q, len, 0, nh, nkv, hd, KV,
                window);
    float* xmid = sized(s.xmid, N * H);
    proj_fwd(att, N, lw, lw.wo, kLoraO, s.lora_t[kLoraO], xmid);
    add_inplace(xmid, s.x.data(), N * H);
    float* xn2 = sized(s.xn2, N * H);
    rmsnorm(xmid, lw.mlp_norm.f32(), xn2, N, H, eps);
    std::memcpy(x, xmid, size_t(N * H) * sizeof(float));
    if (!c.is_moe()) {
      if (!dense_mlp) return;
      Buf out(static_cast<size_t>(N * H));
      for (int64_t r0 = 0; r0 < N; r0 += mc) {
        const int64_t cn = std::min(mc, N - r0);
        mlp_rows_fwd(lw, s, r0, cn);
        proj_fwd(s.h.data(), cn, lw, lw.w_down, kLoraDown, s.lora_t[kLoraDown], out.data() + r0 * H,
                 r0, N);
      }
      add_inplace(x, out.data(), N * H);
    } else {
      float* pr = sized(s.probs, N * E);
      linear_fwd(cd, xn2, N, lw.router, pr);
      softmax_rows(pr, N, E);
      s.topi.assign(size_t(N * K), 0);
      s.topw.assign(size_t(N * K), 0.f);
      s.experts.assign(size_t(E), {});
      std::vector<int64_t> idx(static_cast<size_t>(E));
      for (int64_t t = 0; t < N; ++t) {
        const float* p = pr + t * E;
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + K, idx.end(), [p](int64_t u_, int64_t v_) {
          return p[u_] > p[v_] || (p[u_] == p[v_] && u_ < v_);
        });
        float sum = 0.f;
        for (int64_t j = 0; j < K; ++j) sum += p[idx[size_t(j)]];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t e = idx[size_t(j)];
          s.topi[size_t(t * K + j)] = e;
          s.topw[size_t(t * K + j)] = p[e] / sum;
          s.experts[size_t(e)].rows.push_back(t);
          s.experts[size_t(e)].slot.push_back(j);
          if (count && aux_counts(t)) a.expert_count[size_t(e)]++;
        }
      }
      for (int64_t e = 0; e < E; ++e) {
        ExpertActs& ex = s.experts[size_t(e)];
        const int64_t n = int64_t(ex.rows.size());
        if (!n) continue;
        float* xs = sized(ex.xs, n * H);
        for (int64_t i = 0; i < n; ++i) std::copy_n(xn2 + ex.rows[size_t(i)] * H, H, xs + i * H);
        float* g = sized(ex.g, n * I);
        float* u = sized(ex.u, n * I);
        float* h = sized(ex.h, n * I);
        float* y = sized(ex.y, n * H);
        lora_fwd(xs, n, lw.e_gate[size_t(e)], expert_lora(lw, kLoraW1, e), expert_key(kLoraW1, e),
                 ex.lora_t[kLoraW1], g);
        lora_fwd(xs, n, lw.e_up[size_t(e)], expert_lora(lw, kLoraW3, e), expert_key(kLoraW3, e),
                 ex.lora_t[kLoraW3], u);
        silu_mul(g, u, h, n * I);
        lora_fwd(h, n, lw.e_down[size_t(e)], expert_lora(lw, kLoraW2, e), expert_key(kLoraW2, e),
                 ex.lora_t[kLoraW2], y);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t t = ex.rows[size_t(i)];
          axpy(x + t * H, s.topw[size_t(t * K + ex.slot[size_t(i)])], y + i * H, H);
        }
      }
    }
  };
  a.expert_psum.assign(size_t(E), 0.0);
  if (recompute_)
    a.layers.clear(), a.xin.resize(size_t(L)), a.xin16.resize(size_t(L));
  else
    a.layers.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    // With recomputation only each layer's input is kept; backward runs the layer again.
    LayerActs& s = recompute_ ? a.scratch : a.layers[size_t(l)];
    if (recompute_ && backward) {  // for the backward's rerun
      if (recompute_bf16_) {
        a.xin16[size_t(l)].resize(size_t(N * H));
        to_bf16_parallel(x, a.xin16[size_t(l)].data(), N * H);
      } else {
        a.xin[size_t(l)].assign(x, x + N * H);
      }
    }
    layer_fwd(l, x, s, true, true);
    p_.release_layer_pages(l);  // a mapped frozen base: this layer's pages leave the resident set
    for (int64_t t = 0; t < N && c.is_moe(); ++t)
      if (aux_counts(t))
        for (int64_t e = 0; e < E; ++e) a.expert_psum[size_t(e)] += s.probs[size_t(t * E + e)];
  }
  a.xf.assign(x, x + N * H);
  float* xnf = sized(a.xnf, N * H);
  rmsnorm(a.xf.data(), W.norm.f32(), xnf, N, H, eps);

  // ---- loss: LM head + cross-entropy in row chunks; [N, V] logits never exist at once ----
  StepStats st;
  logprobs_.assign(size_t(N), 0.f);
  float* dxnf = sized(a.dxn, N * H);
  std::fill(dxnf, dxnf + N * H, 0.f);
  const Tensor& head = W.lm_head;
  const Tensor& dhead = c.tie_word_embeddings ? G.embed : G.lm_head;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(1) << 22) / V));
  // Per chunk of rows: logits [cn, V], log-softmax at the targets, and (when the weights are
  // known) the gradient of the weighted CE into the logits and through the head.
  std::vector<float> weights;
  auto head_pass = [&](bool grads, const std::vector<float>& w_rows) {
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
      const int64_t cn = std::min(chunk, N - r0);
      float* lg = sized(a.chunk, cn * V);
      linear_fwd(cd, xnf + r0 * H, cn, head, lg);
      for (int64_t i = 0; i < cn; ++i) {
        const int64_t r = r0 + i;
        float* row = lg + i * V;
        const int32_t tgt = b.targets[size_t(r)];
        if (tgt < 0) {
          std::fill(row, row + V, 0.f);
          continue;
        }
        if (tgt >= V) fail("target id ", tgt, " is outside the vocabulary [0, ", V, ")");
        const float mx = *std::max_element(row, row + V);
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < V; ++j) sum += fast_exp(row[j] - mx);
        const double lse = double(mx) + std::log(double(sum));
        const double lp = double(row[tgt]) - lse;
        logprobs_[size_t(r)] = float(lp);
        if (!grads) continue;
        const double w = w_rows[size_t(r)];
        st.loss_sum += -w * lp;
        st.weight_sum += w;
        st.tokens++;
        // d(w * CE / normalizer)/dlogits = (softmax - onehot) * w / normalizer
        const float scale = float(w / normalizer), flse = float(lse);
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) row[j] = fast_exp(row[j] - flse) * scale;
        row[tgt] -= scale;
      }
      if (grads && backward)
        linear_bwd(cd, xnf + r0 * H, cn, head, grad_of(dhead), lg, dxnf + r0 * H, false);
    }
  };
  if (reweight) {
    head_pass(false, weights);  // log-probs only
    weights = b.weights;
    reweight(logprobs_, weights);
    if (backward) head_pass(true, weights);
  } else {
    head_pass(true, b.weights);
  }
  if (c.is_moe()) {
    // transformers' load_balancing_loss_func over all layers' router rows (R = L * the positions
    // aux_mask counts): aux = E * sum_e (count_e / R) * (sum_rows p_e / R).
    const double R = double(L * aux_rows);
    for (int64_t e = 0; e < E; ++e) {
      const double psum = a.expert_psum[size_t(e)];
      st.aux_loss += double(E) * (double(a.expert_count[size_t(e)]) / R) * (psum / R);
    }
  }
  if (!backward) return st;

  // ---- backward ----
  float* dx = sized(a.dx, N * H);
  rmsnorm_backward(a.xf.data(), W.norm.f32(), dxnf, dx, grad_ptr(G.norm), N, H, eps);
  float* dtmp = sized(a.dtmp, N * H);
  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerWeights& lw = W.layers[size_t(l)];
    const LayerWeights& lg = G.layers[size_t(l)];
    if (recompute_) {
      // The kept input (moved: the rerun overwrites it, and nothing needs it afterwards).
      Buf xr;
      if (recompute_bf16_) {
        xr.resize(size_t(N * H));
        convert_to_f32(a.xin16[size_t(l)].data(), DType::BF16, xr.data(), size_t(N * H));
        std::vector<uint16_t>().swap(a.xin16[size_t(l)]);
      } else {
        xr = std::move(a.xin[size_t(l)]);
      }
      layer_fwd(l, xr.data(), a.scratch, false, false);
    }
    cur_layer = l;
    LayerActs& s = recompute_ ? a.scratch : a.layers[size_t(l)];
    // MLP: x_out = xmid + mlp(xn2); dx is d x_out.
    float* dxn2 = sized(a.dxn, N * H);
    if (!c.is_moe()) {
      for (int64_t r0 = 0; r0 < N; r0 += mc) {
        const int64_t cn = std::min(mc, N - r0);
        const float* xc = s.xn2.data() + r0 * H;
        if (recompute_) {  // g, u, h of these rows again, and the down adapter's t
          mlp_rows_fwd(lw, s, r0, cn);
          lora_path(s.h.data(), cn, I, lw.lora[kLoraDown], kLoraDown, s.lora_t[kLoraDown], nullptr,
                    r0, N);
        }
        float* dh = sized(a.dh, cn * I);
        proj_bwd(s.h.data(), cn, lw, lg, lw.w_down, lg.w_down, kLoraDown, s.lora_t[kLoraDown],
                 dx + r0 * H, dh, false, r0);
        float* dg = sized(a.dg, cn * I);
        float* du = sized(a.du, cn * I);
        silu_mul_backward(s.g.data(), s.u.data(), dh, dg, du, cn * I);
        proj_bwd(xc, cn, lw, lg, lw.w_gate, lg.w_gate, kLoraGate, s.lora_t[kLoraGate], dg,
                 dxn2 + r0 * H, false, r0);
        proj_bwd(xc, cn, lw, lg, lw.w_up, lg.w_up, kLoraUp, s.lora_t[kLoraUp], du, dxn2 + r0 * H,
                 true, r0);
      }
    } else {
      std::fill(dxn2, dxn2 + N * H, 0.f);
      Buf dtopw(static_cast<size_t>(N * K), 0.f);
      for (int64_t e = 0; e < E; ++e) {
        ExpertActs& ex = s.experts[size_t(e)];
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
        float* dh = sized(a.dh, n * I);
        lora_bwd(ex.h.data(), n, lw.e_down[size_t(e)], expert_grad(lg.e_down, e),
                 expert_lora(lw, kLoraW2, e), &expert_lora(lg, kLoraW2, e), expert_key(kLoraW2, e),
                 ex.lora_t[kLoraW2], dy.data(), dh, false);
        float* dg = sized(a.dg, n * I);
        float* du = sized(a.du, n * I);
        silu_mul_backward(ex.g.data(), ex.u.data(), dh, dg, du, n * I);
        lora_bwd(ex.xs.data(), n, lw.e_gate[size_t(e)], expert_grad(lg.e_gate, e),
                 expert_lora(lw, kLoraW1, e), &expert_lora(lg, kLoraW1, e), expert_key(kLoraW1, e),
                 ex.lora_t[kLoraW1], dg, dxs.data(), false);
        lora_bwd(ex.xs.data(), n, lw.e_up[size_t(e)], expert_grad(lg.e_up, e),
                 expert_lora(lw, kLoraW3, e), &expert_lora(lg, kLoraW3, e), expert_key(kLoraW3, e),
                 ex.lora_t[kLoraW3], du, dxs.data(), true);
        for (int64_t i = 0; i < n; ++i)
          add_inplace(dxn2 + ex.rows[size_t(i)] * H, dxs.data() + i * H, H);
      }
      // Router: w_k = p_k / S over the top-k; dp_k = (dw_k - sum_j w_j dw_j) / S. The aux loss adds
      // coef * E * count_e / R^2 to every row's dp_e. Then softmax backward to the logits.
      const double R = double(L * aux_rows);
      Buf dlogit(static_cast<size_t>(N * E));
      for (int64_t t = 0; t < N; ++t) {
        const float* p = s.probs.data() + t * E;
        std::vector<double> dp(static_cast<size_t>(E), 0.0);
        double S = 0, wdw = 0;
        for (int64_t j = 0; j < K; ++j) {
          S += p[s.topi[size_t(t * K + j)]];
          wdw += double(s.topw[size_t(t * K + j)]) * dtopw[size_t(t * K + j)];
        }
        for (int64_t j = 0; j < K; ++j)
          dp[size_t(s.topi[size_t(t * K + j)])] = (dtopw[size_t(t * K + j)] - wdw) / S;
        for (int64_t e = 0; e < E && aux_counts(t); ++e)
          dp[size_t(e)] += aux_coef * double(E) * double(a.expert_count[size_t(e)]) / (R * R);
        double pdp = 0;
        for (int64_t e = 0; e < E; ++e) pdp += p[e] * dp[size_t(e)];
        for (int64_t e = 0; e < E; ++e)
          dlogit[size_t(t * E + e)] = float(p[e] * (dp[size_t(e)] - pdp));
      }
      linear_bwd(cd, s.xn2.data(), N, lw.router, grad_of(lg.router), dlogit.data(), dxn2, true);
    }
    // d xmid = dx (residual) + norm backward of dxn2
    rmsnorm_backward(s.xmid.data(), lw.mlp_norm.f32(), dxn2, dtmp, grad_ptr(lg.mlp_norm), N, H,
                     eps);
    add_inplace(dx, dtmp, N * H);
    // Attention: xmid = x + att Wo^T
    float* datt = sized(a.datt, N * Q);
    proj_bwd(s.att.data(), N, lw, lg, lw.wo, lg.wo, kLoraO, s.lora_t[kLoraO], dx, datt, false);
    float* dq = sized(a.dq, N * Q);
    float* dk = sized(a.dk, N * KV);
    float* dv = sized(a.dv, N * KV);
    for (auto [r0, len] : segs)
      attention_backward(s.q.data() + r0 * Q, s.k.data() + r0 * KV, s.v.data() + r0 * KV,
                         datt + r0 * Q, dq + r0 * Q, dk + r0 * KV, dv + r0 * KV, len, nh, nkv, hd,
                         window);
    const std::vector<float> inv_freq = rope_inv_freq(c);
    rope_backward(dq, a.pos.data(), N, nh, hd, inv_freq.data());
    rope_backward(dk, a.pos.data(), N, nkv, hd, inv_freq.data());
    float* dxn1 = sized(a.dxn, N * H);
    proj_bwd(s.xn1.data(), N, lw, lg, lw.wq, lg.wq, kLoraQ, s.lora_t[kLoraQ], dq, dxn1, false);
    proj_bwd(s.xn1.data(), N, lw, lg, lw.wk, lg.wk, kLoraK, s.lora_t[kLoraK], dk, dxn1, true);
    proj_bwd(s.xn1.data(), N, lw, lg, lw.wv, lg.wv, kLoraV, s.lora_t[kLoraV], dv, dxn1, true);
    rmsnorm_backward(s.x.data(), lw.attn_norm.f32(), dxn1, dtmp, grad_ptr(lg.attn_norm), N, H, eps);
    add_inplace(dx, dtmp, N * H);
    p_.release_layer_pages(l);
  }
  // Embedding: scatter-add the rows.
  if (float* dE = grad_ptr(G.embed))
    for (int64_t i = 0; i < N; ++i)
      add_inplace(dE + int64_t(b.tokens[size_t(i)]) * H, dx + i * H, H);
  return st;
}

}  // namespace lamina
