#include "model/imatrix.h"

#include <cmath>

#include "core/error.h"
#include "io/gguf_names.h"
#include "kernels/ops.h"

namespace lamina {

namespace {

// GGUF's name of a product's weight (without "blk.N.").
const char* product_gguf_name(Product p) {
  switch (p) {
    case Product::kQ:
      return kGgufLayerTensors[1].gguf;
    case Product::kK:
      return kGgufLayerTensors[2].gguf;
    case Product::kV:
      return kGgufLayerTensors[3].gguf;
    case Product::kO:
      return kGgufLayerTensors[4].gguf;
    case Product::kGate:
      return kGgufDenseMlp[0].gguf;
    case Product::kUp:
      return kGgufDenseMlp[1].gguf;
    case Product::kDown:
      return kGgufDenseMlp[2].gguf;
    case Product::kRouter:
      return kGgufRouter;
    case Product::kExpertGate:
      return kGgufExperts[0].gguf;
    case Product::kExpertUp:
      return kGgufExperts[1].gguf;
    case Product::kExpertDown:
      return kGgufExperts[2].gguf;
  }
  return "";
}

bool is_expert(Product p) {
  return p == Product::kExpertGate || p == Product::kExpertUp || p == Product::kExpertDown;
}

// Sums x^2 per column of every product's input, by GGUF name and matrix (expert).
class SquareSums final : public ProductObserver {
 public:
  SquareSums(const ModelConfig& cfg, bool lm_head) : cfg_(cfg), lm_head_(lm_head) {
    names_.resize(size_t(cfg.num_hidden_layers));
  }
  void observe(int64_t layer, Product p, int64_t e, const float* x, int64_t M, int64_t K) override {
    auto& by_product = names_[size_t(layer)];
    std::string& name = by_product[int(p)];
    if (name.empty()) name = "blk." + std::to_string(layer) + "." + product_gguf_name(p);
    const int64_t nmat = is_expert(p) ? cfg_.num_local_experts : 1;
    add(name, is_expert(p) ? e : 0, nmat, x, M, K);
  }
  void observe_lm_head(const float* x, int64_t M, int64_t H) override {
    // Tied: llama.cpp multiplies by token_embd.weight, which llama-imatrix never collects.
    if (lm_head_ && !cfg_.tie_word_embeddings) add(kGgufModelTensors[2].gguf, 0, 1, x, M, H);
  }
  ImatrixData& data() { return data_; }

 private:
  void add(const std::string& name, int64_t mat, int64_t nmat, const float* x, int64_t M,
           int64_t K) {
    ImatrixEntry& ent = data_.entries[name];
    if (ent.count.empty()) {
      ent.cols = K;
      ent.sum2.assign(size_t(nmat * K), 0.0);
      ent.count.assign(size_t(nmat), 0);
    }
    if (ent.cols != K || mat < 0 || mat >= int64_t(ent.count.size()))
      fail("imatrix: ", name, " seen with ", K, " columns (matrix ", mat, "), was ", ent.cols);
    double* s = ent.sum2.data() + mat * K;
    for (int64_t r = 0; r < M; ++r) {
      const float* xr = x + r * K;
      for (int64_t j = 0; j < K; ++j) s[j] += double(xr[j]) * double(xr[j]);
    }
    ent.count[size_t(mat)] += M;
  }

  const ModelConfig& cfg_;
  bool lm_head_;
  std::vector<std::map<int, std::string>> names_;  // [layer][product]: its GGUF name
  ImatrixData data_;
};

}  // namespace

ImatrixResult compute_imatrix(Model& model, const std::vector<int32_t>& tokens,
                              const ImatrixOptions& opt) {
  const ModelConfig& cfg = model.config();
  const int64_t n_ctx = opt.n_ctx, V = cfg.vocab_size;
  if (n_ctx < 2) fail("imatrix: --ctx must be at least 2, got ", n_ctx);
  if (n_ctx > cfg.max_position_embeddings)
    fail("imatrix: --ctx ", n_ctx, " exceeds the model's context of ", cfg.max_position_embeddings,
         " positions");
  if (int64_t(tokens.size()) < 2 * n_ctx)
    fail("imatrix: the data holds ", tokens.size(), " tokens; a context of ", n_ctx,
         " needs at least ", 2 * n_ctx);
  int64_t chunks = int64_t(tokens.size()) / n_ctx;
  if (opt.max_chunks >= 0) chunks = std::min(chunks, opt.max_chunks);

  SquareSums sums(cfg, opt.process_output);
  model.observe_products(&sums);
  struct Detach {  // the observer lives on this stack frame only
    Model& m;
    ~Detach() { m.observe_products(nullptr); }
  } detach{model};

  KVCache cache = model.new_cache(n_ctx);
  std::vector<float> logits(size_t(n_ctx * V));
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
  double nll = 0, nll2 = 0;
  int64_t scored = 0;
  ImatrixResult r;
  for (int64_t c = 0; c < chunks; ++c) {
    const int32_t* src = tokens.data() + c * n_ctx;
    chunk.assign(src, src + n_ctx);
    if (opt.bos_id >= 0) chunk[0] = opt.bos_id;
    cache.len = 0;
    model.forward(chunk.data(), n_ctx, cache, logits.data(), true);
    if (opt.perplexity) {  // llama-imatrix scores the second half: context for every prediction
      for (int64_t i = n_ctx / 2; i < n_ctx - 1; ++i) {
        const double v = -log_softmax_at(logits.data() + i * V, V, src[i + 1]);
        nll += v, nll2 += v * v, ++scored;
      }
    }
    r.chunks = c + 1;
    if (opt.on_chunk) opt.on_chunk(c + 1, chunks, scored ? std::exp(nll / double(scored)) : 0.0);
  }
  r.data = std::move(sums.data());
  r.data.chunk_count = chunks;
  r.data.chunk_size = n_ctx;
  if (!opt.dataset.empty()) r.data.datasets.push_back(opt.dataset);
  if (scored) {
    const double mean = nll / double(scored), var = nll2 / double(scored) - mean * mean;
    r.perplexity = std::exp(mean);
    if (scored > 1 && var > 0)
      r.perplexity_error = std::sqrt(var / double(scored - 1)) * r.perplexity;
  }
  return r;
}

}  // namespace lamina
