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
#include "model/decoder_block.h"
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

// Training's products (model/decoder_block.h): y = x W^T through linear_fwd, plus LoRA's
// lp.scale · (x A^T) B^T where the layer has an adapter there, with LoRA dropout (training only)
// on the adapter's input. The mask is a hash of (step key, layer, projection, element), so
// recomputation and resumed runs draw the same one. The saved state is t = x A^T [rows, r].
class TrainingProducts final : public LayerProducts {
 public:
  TrainingProducts(const ModelWeights& w, const ModelWeights& g, DType compute, float drop,
                   uint64_t key, const std::unordered_set<const void*>& frozen)
      : w_(w), g_(g), cd_(compute), drop_(drop), key_(key), frozen_(frozen) {}

  // No gradient view (compacted away) or frozen: the weight-gradient product is skipped.
  const Tensor* grad_of(const Tensor& g) const {
    return !g.defined() || frozen_.count(g.data) ? nullptr : &g;
  }
  float* grad_ptr(const Tensor& g) const {
    return grad_of(g) ? const_cast<float*>(g.f32()) : nullptr;
  }

  void forward(int64_t layer, Product p, int64_t e, const float* x, int64_t M, float* y, Buf& saved,
               int64_t row0, int64_t rows) override {
    const Tensor& Wt = product_weight(w_.layers[size_t(layer)], p, e);
    if (y) linear_fwd(cd_, x, M, Wt, y);
    const LoraPair& lp = adapter(w_.layers[size_t(layer)], p, e);
    if (!lp.a.defined()) return;
    const int64_t r = lp.a.shape[0], out = lp.b.shape[0], K = Wt.shape[1];
    if (row0 == 0) saved.resize(size_t(rows * r));
    float* t = saved.data() + row0 * r;
    Buf xd;
    linear_fwd(cd_, lora_input(x, M * K, layer, key(p, e), xd, row0 * K), M, lp.a, t);
    if (!y) return;
    Buf tmp(static_cast<size_t>(M * out));
    linear_fwd(cd_, t, M, lp.b, tmp.data());
    axpy(y, lp.scale, tmp.data(), M * out);
  }

  void backward(int64_t layer, Product p, int64_t e, const float* x, int64_t M, const float* dy,
                float* dx, bool acc, const Buf& saved, int64_t row0) override {
    const LayerWeights& lw = w_.layers[size_t(layer)];
    const LayerWeights& lg = g_.layers[size_t(layer)];
    const Tensor& Wt = product_weight(lw, p, e);
    linear_bwd(cd_, x, M, Wt, weight_grad(lg, p, e), dy, dx, acc);
    const LoraPair& lp = adapter(lw, p, e);
    if (!lp.a.defined()) return;
    const LoraPair& lgp = adapter(lg, p, e);
    const Tensor* dA = grad_of(lgp.a);
    const Tensor* dB = grad_of(lgp.b);
    const int64_t r = lp.a.shape[0], out = Wt.shape[0];
    const float* t = saved.data() + row0 * r;
    Buf dys(dy, dy + M * out), dt(static_cast<size_t>(M * r));
    for (auto& v : dys) v *= lp.scale;
    linear_bwd(cd_, t, M, lp.b, dB, dys.data(), dt.data(), false);
    if (drop_ <= 0) {
      linear_bwd(cd_, x, M, lp.a, dA, dt.data(), dx, true);
      return;
    }
    // Through the dropout: dA from the dropped input, dx masked and rescaled.
    const int64_t K = Wt.shape[1];
    const int k = key(p, e);
    Buf xd, dxl(static_cast<size_t>(M * K));
    linear_bwd(cd_, lora_input(x, M * K, layer, k, xd, row0 * K), M, lp.a, dA, dt.data(),
               dxl.data(), false);
    const float sc = 1.0f / (1.0f - drop_);
    for (int64_t i = 0; i < M * K; ++i)
      if (keep(layer, k, row0 * K + i)) dx[i] += dxl[size_t(i)] * sc;
  }

 private:
  // The adapter of product p (undefined when none; Mixtral's router never has one).
  static const LoraPair& adapter(const LayerWeights& lw, Product p, int64_t e) {
    static const LoraPair kNone;
    if (p <= Product::kDown) return lw.lora[int(p)];
    if (p == Product::kRouter) return kNone;
    const auto& v = lw.e_lora[expert_target(p)];
    return size_t(e) < v.size() ? v[size_t(e)] : kNone;
  }
  static int expert_target(Product p) {
    return p == Product::kExpertGate ? kLoraW1 : p == Product::kExpertUp ? kLoraW3 : kLoraW2;
  }
  // Tells the projections apart in the dropout masks: the LoraTarget for attention / dense MLP,
  // kLoraTargets + 3 e + t for expert e's w1/w2/w3.
  static int key(Product p, int64_t e) {
    return p <= Product::kDown ? int(p) : int(kLoraTargets + 3 * e + expert_target(p));
  }
  // A frozen layer's expert gradient list is empty: nothing was bound.
  const Tensor* weight_grad(const LayerWeights& lg, Product p, int64_t e) const {
    if (p < Product::kExpertGate) return grad_of(product_weight(lg, p, e));
    const auto& v = p == Product::kExpertGate ? lg.e_gate
                    : p == Product::kExpertUp ? lg.e_up
                                              : lg.e_down;
    return size_t(e) < v.size() ? grad_of(v[size_t(e)]) : nullptr;
  }
  bool keep(int64_t layer, int tgt, int64_t i) const {
    uint64_t z = key_ ^ (uint64_t(layer) * 0x9E3779B97F4A7C15ull) ^ (uint64_t(tgt) << 56) ^
                 uint64_t(i) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
    z ^= z >> 29;
    return double(z >> 11) / 9007199254740992.0 >= drop_;
  }
  // x [n] with the dropout applied (off: the element index of x[0] in the whole tensor, so row
  // chunks draw the same mask).
  const float* lora_input(const float* x, int64_t n, int64_t layer, int tgt, Buf& xd,
                          int64_t off) const {
    if (drop_ <= 0) return x;
    float* o = sized(xd, n);
    const float sc = 1.0f / (1.0f - drop_);
    for (int64_t i = 0; i < n; ++i) o[i] = keep(layer, tgt, off + i) ? x[i] * sc : 0.0f;
    return o;
  }

  const ModelWeights& w_;
  const ModelWeights& g_;
  DType cd_;
  float drop_;
  uint64_t key_;
  const std::unordered_set<const void*>& frozen_;
};

}  // namespace

struct TrainGraph::Acts {
  std::vector<LayerActivations> layers;
  LayerActivations scratch;                  // recomputation: the one layer being worked on
  std::vector<Buf> xin;                      // recomputation: each layer's input [N, H]
  std::vector<std::vector<uint16_t>> xin16;  // the same rounded to bf16 (set_recompute_bf16_inputs)
  std::vector<double> expert_psum;  // MoE: router probabilities summed per expert over all layers
  Buf xf, xnf, dx, dxn, chunk;
  LayerGradScratch grads;
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
  const int64_t V = c.vocab_size, L = c.num_hidden_layers, E = c.num_local_experts;
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
  TrainingProducts prod(W, G, cd, backward ? float(p_.lora_dropout) : 0.0f, dropout_key_, frozen);
  auto grad_of = [&](const Tensor& g) { return prod.grad_of(g); };
  auto grad_ptr = [&](const Tensor& g) { return prod.grad_ptr(g); };
  a.pos.resize(size_t(N));
  // Attention runs per segment: a packed row holds several conversations, each attending only
  // to itself with positions restarting at 0 (block-diagonal causal mask).
  LayerPass pass;
  pass.cfg = &c;
  pass.rows = N;
  for (int64_t bi = 0; bi < B; ++bi) {
    std::vector<int32_t> lens = b.segments.empty() || b.segments[size_t(bi)].empty()
                                    ? std::vector<int32_t>{int32_t(T)}
                                    : b.segments[size_t(bi)];
    int64_t at = bi * T, total = 0;
    for (int32_t len : lens) {
      if (len <= 0) fail("batch: segment lengths must be positive");
      pass.spans.push_back({at, len, at, 0});
      for (int64_t i = 0; i < len; ++i) a.pos[size_t(at + i)] = i;
      at += len, total += len;
    }
    if (total != T) fail("batch: segment lengths of row ", bi, " add up to ", total, ", not ", T);
  }

  // ---- forward ----
  Buf x0;
  float* x = sized(x0, N * H);
  embedding(p_.weights.embed, b.tokens.data(), N, x);  // [N, H], from the F32 masters
  const float escale = float(c.embed_scale);           // Gemma: times sqrt(hidden_size)
  if (escale != 1.0f)
    for (int64_t i = 0; i < N * H; ++i) x[i] *= escale;
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
  const std::vector<float> inv_freq = rope_inv_freq(c);
  const std::vector<float> inv_freq_local =
      rope_default_inv_freq(c.head_dim, c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta);
  pass.positions = a.pos.data();
  pass.inv_freq = inv_freq.data();
  pass.inv_freq_local = inv_freq_local.data();
  pass.mlp_chunk_rows = mc;
  pass.recompute_mlp = recompute_;
  pass.expert_count = &a.expert_count;
  pass.aux_mask = b.aux_mask.empty() ? nullptr : b.aux_mask.data();
  a.expert_psum.assign(size_t(E), 0.0);
  if (recompute_)
    a.layers.clear(), a.xin.resize(size_t(L)), a.xin16.resize(size_t(L));
  else
    a.layers.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    // With recomputation only each layer's input is kept; backward runs the layer again.
    LayerActivations& s = recompute_ ? a.scratch : a.layers[size_t(l)];
    if (recompute_ && backward) {  // for the backward's rerun
      if (recompute_bf16_) {
        a.xin16[size_t(l)].resize(size_t(N * H));
        to_bf16_parallel(x, a.xin16[size_t(l)].data(), N * H);
      } else {
        a.xin[size_t(l)].assign(x, x + N * H);
      }
    }
    decoder_layer_forward(pass, l, W.layers[size_t(l)], prod, x, s);
    p_.release_layer_pages(l);  // a mapped frozen base: this layer's pages leave the resident set
    for (int64_t t = 0; t < N && c.is_moe(); ++t)
      if (aux_counts(t))
        for (int64_t e = 0; e < E; ++e) a.expert_psum[size_t(e)] += s.probs[size_t(t * E + e)];
  }
  a.xf.assign(x, x + N * H);
  float* xnf = sized(a.xnf, N * H);
  Buf norm_gain;
  rmsnorm(a.xf.data(), rmsnorm_gain(c, W.norm, norm_gain), xnf, N, H, eps);

  // ---- loss: LM head + cross-entropy in row chunks; [N, V] logits never exist at once ----
  StepStats st;
  logprobs_.assign(size_t(N), 0.f);
  float* dxnf = sized(a.dxn, N * H);
  std::fill(dxnf, dxnf + N * H, 0.f);
  const Tensor& head = W.lm_head;
  const Tensor& dhead = c.tie_word_embeddings ? G.embed : G.lm_head;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(1) << 22) / V));
  const float fcap = float(c.final_softcap);
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
        if (fcap > 0)  // Gemma 2's final soft-capping: the loss is over cap * tanh(logit / cap)
          for (int64_t j = 0; j < V; ++j) row[j] = fcap * std::tanh(row[j] / fcap);
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
        if (fcap > 0) {  // and back through the capping: d capped / d logit = 1 - (capped / cap)^2
          for (int64_t j = 0; j < V; ++j) {
            const float cv = row[j], t = cv / fcap;
            const float g = fast_exp(cv - flse) * scale - (j == tgt ? scale : 0.0f);
            row[j] = g * (1.0f - t * t);
          }
          continue;
        }
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
  rmsnorm_backward(a.xf.data(), rmsnorm_gain(c, W.norm, norm_gain), dxnf, dx, grad_ptr(G.norm), N,
                   H, eps);
  pass.expert_count = nullptr;  // the backward's reruns do not count routes again
  RouterAuxLoss aux;
  aux.coef = aux_coef;
  aux.rows = double(L * aux_rows);
  aux.expert_count = &a.expert_count;
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
      decoder_layer_forward(pass, l, lw, prod, xr.data(), a.scratch, nullptr, false);
    }
    LayerActivations& s = recompute_ ? a.scratch : a.layers[size_t(l)];
    LayerVectorGrads vg;
    vg.attn_norm = grad_ptr(lg.attn_norm), vg.mlp_norm = grad_ptr(lg.mlp_norm);
    vg.bq = grad_ptr(lg.bq), vg.bk = grad_ptr(lg.bk), vg.bv = grad_ptr(lg.bv);
    vg.bo = grad_ptr(lg.bo), vg.q_norm = grad_ptr(lg.q_norm), vg.k_norm = grad_ptr(lg.k_norm);
    vg.post_attn_norm = grad_ptr(lg.post_attn_norm), vg.post_mlp_norm = grad_ptr(lg.post_mlp_norm);
    decoder_layer_backward(pass, l, lw, prod, s, dx, vg, aux, a.grads);
    p_.release_layer_pages(l);
  }
  // Embedding: scatter-add the rows.
  if (float* dE = grad_ptr(G.embed))
    for (int64_t i = 0; i < N; ++i)
      if (b.tokens[size_t(i)] != c.pad_token_id.value_or(-1))  // padding_idx: no lookup gradient
        axpy(dE + int64_t(b.tokens[size_t(i)]) * H, escale, dx + i * H, H);
  return st;
}

}  // namespace lamina
