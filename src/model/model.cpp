#include "model/model.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant_dot.h"
#include "model/rope_frequencies.h"

namespace lamina {

KVCache::KVCache(int64_t layers, int64_t cap, int64_t kv_dim) : capacity(cap) {
  for (int64_t l = 0; l < layers; ++l) {
    k.push_back(Tensor::empty(DType::F32, {cap, kv_dim}));
    v.push_back(Tensor::empty(DType::F32, {cap, kv_dim}));
  }
}

namespace {

// An inference model's Q4_0 / Q8_0 matrix -> Q4_0x8 / Q8_0x8 (its rows interleaved by groups of
// 8 for the integer products, kernels/quant_dot.h): the same bytes rearranged, replacing the
// original — which is freed, or, when it lives in a memory-mapped file, its pages leave the
// resident set — so the weights are held once.
void repack_quantized(Tensor& t) {
  if ((t.dtype != DType::Q4_0 && t.dtype != DType::Q8_0) || t.shape.size() != 2 ||
      t.shape[0] % 8 != 0)
    return;
  Tensor r = Tensor::empty(t.dtype == DType::Q4_0 ? DType::Q4_0x8 : DType::Q8_0x8, t.shape);
  repack_x8(t.dtype, static_cast<const uint8_t*>(t.data), t.shape[0], t.shape[1],
            static_cast<uint8_t*>(r.data));
  if (is_in_mapped_file(t.data)) release_mapped_pages(t.data, t.nbytes());
  t = std::move(r);
}

}  // namespace

Model::Model(ModelConfig cfg, ModelWeights w, bool pack_weights)
    : cfg_(std::move(cfg)),
      inv_freq_(rope_inv_freq(cfg_)),
      w_(std::move(w)),
      pack_(pack_weights ? std::make_unique<WeightPack>() : nullptr) {
  if (!pack_weights) return;
  for (LayerWeights& L : w_.layers) {
    for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      repack_quantized(*t);
    for (auto* experts : {&L.e_gate, &L.e_up, &L.e_down})
      for (Tensor& t : *experts) repack_quantized(t);
  }
  // The LM head, unless it is the embedding itself (tied: its rows are gathered as stored).
  if (w_.lm_head.data != w_.embed.data) repack_quantized(w_.lm_head);
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opt) {
  ModelConfig cfg = ModelConfig::load(dir);
  Checkpoint ckpt(dir);
  ModelWeights w = load_weights(cfg, ckpt, opt);
  return std::make_unique<Model>(std::move(cfg), std::move(w), opt.pack_weights);
}

float* Model::scratch(Slot s, int64_t n) const {
  if (scratch_.empty()) scratch_.resize(kSlots);
  auto& v = scratch_[size_t(s)];
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

KVCache Model::new_cache(int64_t capacity) const {
  capacity = std::min(capacity, cfg_.max_position_embeddings);
  return KVCache(cfg_.num_hidden_layers, capacity, cfg_.num_key_value_heads * cfg_.head_dim);
}

void Model::attention_block(const LayerWeights& L, int64_t layer, const float* xn, int64_t T,
                            KVCache& cache, float* out,
                            const std::vector<int32_t>* segments) const {
  const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  const int64_t kvd = nkv * hd, pos0 = cache.len;
  float* q = scratch(kQ, T * nh * hd);  // [T, nh*hd]
  float* att = scratch(kAtt, T * nh * hd);
  float* kc = cache.k[size_t(layer)].f32() + pos0 * kvd;  // new rows go straight into the cache
  float* vc = cache.v[size_t(layer)].f32() + pos0 * kvd;
  mm(xn, T, L.wq, q);   // q[T, nh*hd]
  mm(xn, T, L.wk, kc);  // k[T, nkv*hd]
  mm(xn, T, L.wv, vc);  // v[T, nkv*hd]
  std::vector<int64_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), pos0);
  if (segments) {  // packed sequences: positions restart in each
    int64_t at = 0;
    for (int32_t len : *segments)
      for (int64_t i = 0; i < len; ++i) pos[size_t(at++)] = i;
  }
  rope(q, pos.data(), T, nh, hd, inv_freq_.data());
  rope(kc, pos.data(), T, nkv, hd, inv_freq_.data());
  const float* K = cache.k[size_t(layer)].f32();
  const float* Vv = cache.v[size_t(layer)].f32();
  const int64_t window = cfg_.sliding_window.value_or(0);
  if (!segments) {
    attention(q, K, Vv, att, T, pos0, nh, nkv, hd, kvd, window);
  } else {  // block-diagonal: each segment attends to itself only
    int64_t at = 0;
    for (int32_t len : *segments) {
      attention(q + at * nh * hd, K + (pos0 + at) * kvd, Vv + (pos0 + at) * kvd, att + at * nh * hd,
                len, 0, nh, nkv, hd, kvd, window);
      at += len;
    }
  }
  mm(att, T, L.wo, out);  // out[T, H]
}

void Model::mlp_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const {
  const int64_t I = cfg_.intermediate_size;
  float* g = scratch(kGate, T * I);  // [T, I]
  float* u = scratch(kUp, T * I);
  mm(xn, T, L.w_gate, g);
  mm(xn, T, L.w_up, u);
  silu_mul(g, u, g, T * I);
  mm(g, T, L.w_down, out);
}

// Mixtral's sparse MoE: softmax over all E router logits (F32), top-k, renormalise the k weights
// to sum 1, output = sum_k weight_k * expert_k(x). Tokens are grouped per expert so each expert
// runs one batched product over the tokens routed to it.
void Model::moe_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const {
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size, E = cfg_.num_local_experts;
  const int64_t K = cfg_.num_experts_per_tok;
  float* probs = scratch(kRouter, T * E);
  mm(xn, T, L.router, probs);  // router logits [T, E]
  softmax_rows(probs, T, E);
  std::vector<std::vector<std::pair<int64_t, float>>> routed(
      static_cast<size_t>(E));  // expert -> (token, weight)
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs + t * E;
    std::iota(idx.begin(), idx.end(), 0);
    // torch.topk order: larger first; ties broken by the lower index.
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.f;
    for (int64_t j = 0; j < K; ++j) sum += p[idx[size_t(j)]];
    for (int64_t j = 0; j < K; ++j)
      routed[size_t(idx[size_t(j)])].push_back({t, p[idx[size_t(j)]] / sum});
  }
  std::fill(out, out + T * H, 0.f);
  for (int64_t e = 0; e < E; ++e) {
    auto& r = routed[size_t(e)];
    const int64_t n = int64_t(r.size());
    if (n == 0) continue;
    float* xs = scratch(kGather, n * H);  // the n tokens routed to expert e: [n, H]
    float* g = scratch(kGate, n * I);
    float* u = scratch(kUp, n * I);
    float* y = scratch(kExpertOut, n * H);
    for (int64_t i = 0; i < n; ++i) std::copy_n(xn + r[size_t(i)].first * H, H, xs + i * H);
    mm(xs, n, L.e_gate[size_t(e)], g);
    mm(xs, n, L.e_up[size_t(e)], u);
    silu_mul(g, u, g, n * I);
    mm(g, n, L.e_down[size_t(e)], y);
    for (int64_t i = 0; i < n; ++i)
      axpy(out + r[size_t(i)].first * H, r[size_t(i)].second, y + i * H, H);
  }
}

void Model::forward(const int32_t* tokens, int64_t T, KVCache& cache, float* logits,
                    bool all_logits, const std::vector<int32_t>* segments) const {
  if (segments) {
    int64_t sum = 0;
    for (int32_t len : *segments) sum += len;
    if (sum != T) fail("forward: segment lengths add up to ", sum, ", not ", T);
  }
  if (T <= 0) fail("forward: no tokens");
  if (cache.len + T > cache.capacity)
    fail("sequence of ", cache.len + T, " tokens exceeds the context of ", cache.capacity,
         " positions (max_position_embeddings ", cfg_.max_position_embeddings, ")");
  const int64_t H = cfg_.hidden_size;
  const float eps = float(cfg_.rms_norm_eps);
  float* x = scratch(kX, T * H);  // residual stream [T, H]
  float* xn = scratch(kXn, T * H);
  float* tmp = scratch(kTmp, T * H);
  embedding(w_.embed, tokens, T, x);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    rmsnorm(x, L.attn_norm.f32(), xn, T, H, eps);
    attention_block(L, l, xn, T, cache, tmp, segments);
    add_inplace(x, tmp, T * H);
    rmsnorm(x, L.mlp_norm.f32(), xn, T, H, eps);
    if (cfg_.is_moe())
      moe_block(L, xn, T, tmp);
    else
      mlp_block(L, xn, T, tmp);
    add_inplace(x, tmp, T * H);
  }
  cache.len += T;
  const int64_t rows = all_logits ? T : 1;
  const float* last = x + (T - rows) * H;
  rmsnorm(last, w_.norm.f32(), xn, rows, H, eps);
  mm(xn, rows, w_.lm_head, logits);  // logits[rows, V]
}

}  // namespace lamina
