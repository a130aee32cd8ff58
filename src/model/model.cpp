#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "kernels/kquant_dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/q4_k_x8.h"
#include "kernels/q6_k_x8.h"
#include "kernels/quant_dot.h"
#include "kernels/quant_matmul.h"
#include "model/rope_frequencies.h"

namespace lamina {

KVCache::KVCache(int64_t layers, int64_t cap, int64_t nkv, int64_t hd) : capacity(cap) {
  for (int64_t l = 0; l < layers; ++l) {
    k.push_back(Tensor::empty(DType::F32, {nkv, cap, hd}));
    v.push_back(Tensor::empty(DType::F32, {nkv, cap, hd}));
  }
}

namespace {

// An inference model's Q4_0 / Q8_0 matrix -> Q4_0x8 / Q8_0x8 (its rows interleaved by groups of
// 8 for the integer products, kernels/quant_dot.h): the same bytes rearranged, replacing the
// original — which is freed, or, when it lives in a memory-mapped file, its pages leave the
// resident set — so the weights are held once.
// Q4_K -> Q4_Kx8 and Q6_K -> Q6_Kx8 likewise (kernels/q4_k_x8.h, kernels/q6_k_x8.h), except
// where k-quant prompts are expanded to bf16 (AMX), which read the rows as stored; Q6_K only where
// its tile runs (q6_k_repacked).
void repack_quantized(Tensor& t) {
  const bool k4 = t.dtype == DType::Q4_K && !kquant_prompts_in_bf16();
  const bool k6 = t.dtype == DType::Q6_K && !kquant_prompts_in_bf16() && q6_k_repacked();
  if ((t.dtype != DType::Q4_0 && t.dtype != DType::Q8_0 && !k4 && !k6) || t.shape.size() != 2 ||
      t.shape[0] % 8 != 0)
    return;
  const auto* src = static_cast<const uint8_t*>(t.data);
  Tensor r = Tensor::empty(k4                       ? DType::Q4_Kx8
                           : k6                     ? DType::Q6_Kx8
                           : t.dtype == DType::Q4_0 ? DType::Q4_0x8
                                                    : DType::Q8_0x8,
                           t.shape);
  auto* dst = static_cast<uint8_t*>(r.data);
  if (k4)
    repack_q4_k_x8(src, t.shape[0], t.shape[1], dst);
  else if (k6)
    repack_q6_k_x8(src, t.shape[0], t.shape[1], dst);
  else
    repack_x8(t.dtype, src, t.shape[0], t.shape[1], dst);
  if (is_in_mapped_file(t.data)) release_mapped_pages(t.data, t.nbytes());
  t = std::move(r);
}

}  // namespace

Model::Model(ModelConfig cfg, ModelWeights w, bool pack_weights)
    : cfg_(std::move(cfg)),
      inv_freq_(rope_inv_freq(cfg_)),
      inv_freq_local_(rope_default_inv_freq(
          cfg_.head_dim, cfg_.rope_local_theta > 0 ? cfg_.rope_local_theta : cfg_.rope_theta)),
      w_(std::move(w)),
      pack_(pack_weights ? std::make_unique<WeightPack>() : nullptr) {
  if (!pack_weights) return;
  for (LayerWeights& L : w_.layers) {
    for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) pack_matrix(*t);
    for (auto* experts : {&L.e_gate, &L.e_up, &L.e_down})
      for (Tensor& t : *experts) pack_matrix(t);
  }
  // The LM head, unless it is the embedding itself (tied: its rows are gathered as stored).
  if (w_.lm_head.data != w_.embed.data) pack_matrix(w_.lm_head);
}

void Model::pack_matrix(Tensor& t) {
  if (t.data == nullptr || t.shape.size() != 2) return;
  if (dtype_is_quantized(t.dtype)) return repack_quantized(t);
  // F32 / BF16 (native): oneDNN's blocked copy from now on; the checkpoint's mapped pages leave
  // the resident set (read again from the page cache only if something reads the plain layout).
  if (prepack_weight(t, pack_.get()) && is_in_mapped_file(t.data))
    release_mapped_pages(t.data, t.nbytes());
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
  return KVCache(cfg_.num_hidden_layers, capacity, cfg_.num_key_value_heads, cfg_.head_dim);
}

namespace {

// Inference's products: through the model's packed (oneDNN-blocked / repacked) weights.
class PackedProducts final : public LayerProducts {
 public:
  PackedProducts(const ModelWeights& w, WeightPack* pack, ProductObserver* observer)
      : w_(w), pack_(pack), observer_(observer) {}
  void forward(int64_t layer, Product p, int64_t e, const float* x, int64_t M, float* y, Buf&,
               int64_t, int64_t) override {
    const Tensor& wt = product_weight(w_.layers[size_t(layer)], p, e);
    if (observer_) observer_->observe(layer, p, e, x, M, wt.shape[1]);
    linear(x, M, wt, y, false, pack_);
  }
  void forward_shared_input(int64_t layer, std::span<const Product> ps, int64_t e, const float* x,
                            int64_t M, std::span<float* const> ys, std::span<Buf* const>, int64_t,
                            int64_t) override {
    LinearTarget ts[3];  // q, k, v at most
    LAMINA_CHECK(ps.size() <= 3, "forward_shared_input: ", ps.size(), " products");
    for (size_t i = 0; i < ps.size(); ++i) {
      const Tensor& wt = product_weight(w_.layers[size_t(layer)], ps[i], e);
      if (observer_) observer_->observe(layer, ps[i], e, x, M, wt.shape[1]);
      ts[i] = {&wt, ys[i]};
    }
    linear_group(x, M, std::span<const LinearTarget>(ts, ps.size()), pack_);
  }

 private:
  const ModelWeights& w_;
  WeightPack* pack_;
  ProductObserver* observer_;
};

}  // namespace

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
  const int64_t pos0 = cache.len;
  std::vector<int64_t> pos(static_cast<size_t>(T));
  LayerPass pass;
  if (!segments) {  // the new rows attend to the cache's pos0 keys and to themselves
    std::iota(pos.begin(), pos.end(), pos0);
    pass.spans.push_back({0, T, 0, pos0});
  } else {  // packed sequences: positions restart, each attends to itself only
    int64_t at = 0;
    for (int32_t len : *segments) {
      for (int64_t i = 0; i < len; ++i) pos[size_t(at + i)] = i;
      pass.spans.push_back({at, len, pos0 + at, 0});
      at += len;
    }
  }
  pass.positions = pos.data();
  const float* x =
      run_layers(tokens, T, pass, cache, KeyValueRows{nullptr, nullptr, cache.capacity, pos0});
  cache.len += T;
  const int64_t rows = all_logits ? T : 1;
  lm_head(x + (T - rows) * cfg_.hidden_size, rows, logits);
}

SlotKVCache Model::new_slot_cache(int64_t slots, int64_t slot_capacity) const {
  slot_capacity = std::min(slot_capacity, cfg_.max_position_embeddings);
  SlotKVCache c;
  c.store = KVCache(cfg_.num_hidden_layers, slots * slot_capacity, cfg_.num_key_value_heads,
                    cfg_.head_dim);
  c.slot_capacity = slot_capacity;
  c.len.assign(size_t(slots), 0);
  return c;
}

void Model::forward_slots(const std::vector<SlotStep>& steps, SlotKVCache& cache,
                          float* logits) const {
  if (steps.empty()) fail("forward_slots: no steps");
  const int64_t C = cache.slot_capacity;
  std::vector<int32_t> tokens;
  std::vector<int64_t> pos, dest;
  std::vector<bool> used(size_t(cache.slots()), false);
  LayerPass pass;
  for (const SlotStep& st : steps) {
    if (st.slot < 0 || st.slot >= cache.slots() || used[size_t(st.slot)] || st.n <= 0)
      fail("forward_slots: bad step (slot ", st.slot, " of ", cache.slots(), ", ", st.n,
           " tokens, or a slot given twice)");
    used[size_t(st.slot)] = true;
    const int64_t len = cache.len[size_t(st.slot)];
    if (len + st.n > C)
      fail("sequence of ", len + st.n, " tokens exceeds the context of ", C, " positions");
    pass.spans.push_back({int64_t(tokens.size()), st.n, st.slot * C, len});
    for (int64_t i = 0; i < st.n; ++i) {
      tokens.push_back(st.tokens[i]);
      pos.push_back(len + i);
      dest.push_back(st.slot * C + len + i);
    }
  }
  const int64_t T = int64_t(tokens.size()), H = cfg_.hidden_size;
  pass.positions = pos.data();
  const float* x = run_layers(tokens.data(), T, pass, cache.store,
                              KeyValueRows{nullptr, nullptr, cache.store.capacity, 0, dest.data()});
  // Each step's last row, then the head over those rows only.
  std::vector<float> last(steps.size() * size_t(H));
  int64_t at = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    at += steps[i].n;
    std::copy(x + (at - 1) * H, x + at * H, last.begin() + int64_t(i) * H);
    cache.len[size_t(steps[i].slot)] += steps[i].n;
  }
  lm_head(last.data(), int64_t(steps.size()), logits);
}

float* Model::run_layers(const int32_t* tokens, int64_t T, LayerPass& pass, KVCache& cache,
                         KeyValueRows kv) const {
  const int64_t H = cfg_.hidden_size;
  float* x = scratch(kX, T * H);  // residual stream [T, H]
  embedding(w_.embed, tokens, T, x);
  if (cfg_.embed_scale != 1.0)  // Gemma: embeddings times sqrt(hidden_size)
    for (int64_t i = 0; i < T * H; ++i) x[i] *= float(cfg_.embed_scale);
  pass.cfg = &cfg_;
  pass.rows = T;
  pass.inv_freq = inv_freq_.data();
  pass.inv_freq_local = inv_freq_local_.data();
  PackedProducts prod(w_, pack_.get(), observer_);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    kv.k = cache.k[size_t(l)].f32();
    kv.v = cache.v[size_t(l)].f32();
    decoder_layer_forward(pass, l, w_.layers[size_t(l)], prod, x, layer_, &kv);
  }
  return x;
}

void Model::lm_head(const float* h, int64_t rows, float* logits) const {
  const int64_t H = cfg_.hidden_size;
  float* xn = scratch(kXn, rows * H);
  Buf gb;
  rmsnorm(h, rmsnorm_gain(cfg_, w_.norm, gb), xn, rows, H, float(cfg_.rms_norm_eps));
  if (observer_) observer_->observe_lm_head(xn, rows, H);
  linear(xn, rows, w_.lm_head, logits, false, pack_.get());  // logits[rows, V]
  if (const float cap = float(cfg_.final_softcap); cap > 0)  // Gemma 2: cap * tanh(logit / cap)
    for (int64_t i = 0; i < rows * cfg_.vocab_size; ++i)
      logits[i] = cap * std::tanh(logits[i] / cap);
}

}  // namespace lamina
