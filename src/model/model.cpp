#include "model/model.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace lamina {

KVCache::KVCache(int64_t layers, int64_t cap, int64_t kv_dim) : capacity(cap) {
  for (int64_t l = 0; l < layers; ++l) {
    k.push_back(Tensor::empty(DType::F32, {cap, kv_dim}));
    v.push_back(Tensor::empty(DType::F32, {cap, kv_dim}));
  }
}

Model::Model(ModelConfig cfg, ModelWeights w, bool pack_weights)
    : cfg_(std::move(cfg)), w_(std::move(w)), pack_(pack_weights ? std::make_unique<WeightPack>() : nullptr) {}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opt) {
  ModelConfig cfg = ModelConfig::load(dir);
  Checkpoint ckpt(dir);
  ModelWeights w = load_weights(cfg, ckpt, opt);
  return std::make_unique<Model>(std::move(cfg), std::move(w), opt.pack_weights);
}

KVCache Model::new_cache(int64_t capacity) const {
  capacity = std::min(capacity, cfg_.max_position_embeddings);
  return KVCache(cfg_.num_hidden_layers, capacity, cfg_.num_key_value_heads * cfg_.head_dim);
}

void Model::attention_block(const LayerWeights& L, int64_t layer, const float* xn, int64_t T,
                            KVCache& cache, float* out) const {
  const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  const int64_t kvd = nkv * hd, pos0 = cache.len;
  std::vector<float> q(size_t(T * nh * hd)), att(size_t(T * nh * hd));
  float* kc = cache.k[size_t(layer)].f32() + pos0 * kvd;  // new rows go straight into the cache
  float* vc = cache.v[size_t(layer)].f32() + pos0 * kvd;
  mm(xn, T, L.wq, q.data());  // q[T, nh*hd]
  mm(xn, T, L.wk, kc);        // k[T, nkv*hd]
  mm(xn, T, L.wv, vc);        // v[T, nkv*hd]
  std::vector<int64_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), pos0);
  rope(q.data(), pos.data(), T, nh, hd, cfg_.rope_theta);
  rope(kc, pos.data(), T, nkv, hd, cfg_.rope_theta);
  attention(q.data(), cache.k[size_t(layer)].f32(), cache.v[size_t(layer)].f32(), att.data(), T,
            pos0, nh, nkv, hd, kvd, cfg_.sliding_window.value_or(0));
  mm(att.data(), T, L.wo, out);  // out[T, H]
}

void Model::mlp_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const {
  const int64_t I = cfg_.intermediate_size;
  std::vector<float> g(size_t(T * I)), u(size_t(T * I));
  mm(xn, T, L.w_gate, g.data());
  mm(xn, T, L.w_up, u.data());
  silu_mul(g.data(), u.data(), g.data(), T * I);
  mm(g.data(), T, L.w_down, out);
}

// Mixtral's sparse MoE: softmax over all E router logits (F32), top-k, renormalise the k weights
// to sum 1, output = sum_k weight_k * expert_k(x). Tokens are grouped per expert so each expert
// runs one batched product over the tokens routed to it.
void Model::moe_block(const LayerWeights& L, const float* xn, int64_t T, float* out) const {
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size, E = cfg_.num_local_experts;
  const int64_t K = cfg_.num_experts_per_tok;
  std::vector<float> probs(size_t(T * E));
  mm(xn, T, L.router, probs.data());  // router logits [T, E]
  softmax_rows(probs.data(), T, E);
  std::vector<std::vector<std::pair<int64_t, float>>> routed(static_cast<size_t>(E));  // expert -> (token, weight)
  std::vector<int64_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs.data() + t * E;
    std::iota(idx.begin(), idx.end(), 0);
    // torch.topk order: larger first; ties broken by the lower index.
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float sum = 0.f;
    for (int64_t j = 0; j < K; ++j) sum += p[idx[size_t(j)]];
    for (int64_t j = 0; j < K; ++j) routed[size_t(idx[size_t(j)])].push_back({t, p[idx[size_t(j)]] / sum});
  }
  std::fill(out, out + T * H, 0.f);
  std::vector<float> xs, g, u, y;
  for (int64_t e = 0; e < E; ++e) {
    auto& r = routed[size_t(e)];
    const int64_t n = int64_t(r.size());
    if (n == 0) continue;
    xs.resize(size_t(n * H));
    g.resize(size_t(n * I));
    u.resize(size_t(n * I));
    y.resize(size_t(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(xn + r[size_t(i)].first * H, H, xs.data() + i * H);
    mm(xs.data(), n, L.e_gate[size_t(e)], g.data());
    mm(xs.data(), n, L.e_up[size_t(e)], u.data());
    silu_mul(g.data(), u.data(), g.data(), n * I);
    mm(g.data(), n, L.e_down[size_t(e)], y.data());
    for (int64_t i = 0; i < n; ++i) axpy(out + r[size_t(i)].first * H, r[size_t(i)].second, y.data() + i * H, H);
  }
}

void Model::forward(const int32_t* tokens, int64_t T, KVCache& cache, float* logits, bool all_logits) const {
  if (T <= 0) fail("forward: no tokens");
  if (cache.len + T > cache.capacity)
    fail("sequence of ", cache.len + T, " tokens exceeds the context of ", cache.capacity,
         " positions (max_position_embeddings ", cfg_.max_position_embeddings, ")");
  const int64_t H = cfg_.hidden_size;
  const float eps = float(cfg_.rms_norm_eps);
  std::vector<float> x(size_t(T * H)), xn(size_t(T * H)), tmp(size_t(T * H));
  embedding(w_.embed, tokens, T, x.data());  // x[T, H]
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    rmsnorm(x.data(), L.attn_norm.f32(), xn.data(), T, H, eps);
    attention_block(L, l, xn.data(), T, cache, tmp.data());
    add_inplace(x.data(), tmp.data(), T * H);
    rmsnorm(x.data(), L.mlp_norm.f32(), xn.data(), T, H, eps);
    if (cfg_.is_moe()) moe_block(L, xn.data(), T, tmp.data());
    else mlp_block(L, xn.data(), T, tmp.data());
    add_inplace(x.data(), tmp.data(), T * H);
  }
  cache.len += T;
  const int64_t rows = all_logits ? T : 1;
  const float* last = x.data() + (T - rows) * H;
  rmsnorm(last, w_.norm.f32(), xn.data(), rows, H, eps);
  mm(xn.data(), rows, w_.lm_head, logits);  // logits[rows, V]
}

}  // namespace lamina
