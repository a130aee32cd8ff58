// One decoder layer of a causal LM (llama, mistral, mixtral, qwen2, qwen3, gemma3), written once
// for inference (model/model.cpp) and for training (train/train_graph.cpp): its forward, keeping
// what the backward needs, and its backward, side by side (llm.c's shape).
//
// The layer's own arithmetic — RMSNorms (Gemma's 1 + w, and its norms on the attention's and
// the MLP's outputs), attention biases (Qwen2), per-head QK norms (Qwen3, Gemma 3), RoPE (Gemma 3's
// own base on its sliding layers), query scaling, attention, the SwiGLU / GeGLU MLP or Mixtral's
// routing, the residuals — lives here; its matrix products
// go through a LayerProducts the caller supplies: inference multiplies through packed weights,
// training adds LoRA adapters, widens a frozen narrower base and accumulates weight gradients. A
// new architecture adds its differences here, once, and both paths get them.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "io/model_config.h"
#include "kernels/ops.h"
#include "model/weights.h"

namespace lamina {

// The products of a layer: attention and dense-MLP projections, Mixtral's router, one expert's
// w1 (gate), w3 (up) and w2 (down).
enum class Product {
  kQ,
  kK,
  kV,
  kO,
  kGate,
  kUp,
  kDown,
  kRouter,
  kExpertGate,
  kExpertUp,
  kExpertDown
};
// The weight of product p (expert e) in a layer's weights.
const Tensor& product_weight(const LayerWeights& lw, Product p, int64_t e);

using Buf = std::vector<float>;

// A norm's gain as applied: w, or Gemma's 1 + w (in F32, as transformers computes it; the
// gradient of w is that of the gain). tmp holds it when it is not w itself.
const float* rmsnorm_gain(const ModelConfig& c, const Tensor& w, Buf& tmp);

// How a layer's products are computed.
class LayerProducts {
 public:
  virtual ~LayerProducts() = default;
  // y[M, out] = x[M, in] · W^T for product p (expert e, else -1) of `layer`, over rows
  // [row0, row0 + M) of a pass of `rows` rows (the dense MLP runs in row chunks). `saved` is the
  // implementation's own state for this product's backward, kept with the layer's activations
  // (LoRA: x · A^T); y null asks for that state only (the backward's rerun of a product whose
  // output it does not need).
  virtual void forward(int64_t layer, Product p, int64_t e, const float* x, int64_t M, float* y,
                       Buf& saved, int64_t row0, int64_t rows) = 0;
  // The products ps (expert e, else -1) that multiply the same x[M, in] — q, k, v; gate, up —
  // into ys[i], with saved[i] each one's state: one forward() each, unless the implementation
  // computes them together (inference: one quantization of x, one pass of the threads over all
  // their weight rows).
  virtual void forward_shared_input(int64_t layer, std::span<const Product> ps, int64_t e,
                                    const float* x, int64_t M, std::span<float* const> ys,
                                    std::span<Buf* const> saved, int64_t row0, int64_t rows);
  // Backward of the forward call over the same rows: dx (+)= dy · W (+ the adapter's path), and
  // the product's weight gradients added to. Inference implementations have none.
  virtual void backward(int64_t layer, Product p, int64_t e, const float* x, int64_t M,
                        const float* dy, float* dx, bool accumulate, const Buf& saved,
                        int64_t row0);
};

// AttentionSpan (kernels/ops.h): a span of the pass's rows and the keys of the layer's key/value
// store they attend to.

// What every layer of one pass shares.
struct LayerPass {
  const ModelConfig* cfg = nullptr;
  int64_t rows = 0;                       // N: tokens of the pass (all sequences together)
  const int64_t* positions = nullptr;     // [N] RoPE positions
  const float* inv_freq = nullptr;        // [head_dim / 2] (model/rope_frequencies.h)
  const float* inv_freq_local = nullptr;  // Gemma 3's sliding layers' (config.local_rope)
  std::vector<AttentionSpan> spans;
  // Dense MLP rows per chunk (0: all rows at once). With recompute_mlp the forward keeps g, u, h
  // of the last chunk only and the backward recomputes them chunk by chunk from xn2.
  int64_t mlp_chunk_rows = 0;
  bool recompute_mlp = false;
  // MoE: count each (token, slot) routed to an expert here (null: no counting); aux_mask [N]
  // leaves out the positions the load-balancing loss does not count (null: all count).
  std::vector<int64_t>* expert_count = nullptr;
  const uint8_t* aux_mask = nullptr;
};

struct ExpertActivations {
  std::vector<int64_t> rows;  // tokens routed to this expert
  std::vector<int64_t> slot;  // which of the token's top-k slots
  Buf xs, g, u, h, y;         // [n, H], [n, I] x3, [n, H]
  Buf saved[3];               // LayerProducts state of gate, up, down
};

// A layer's forward values the backward reads ([N, ...] rows).
struct LayerActivations {
  Buf x, xn1, q, k, v, att, xmid, xn2, g, u, h;  // k, v: unless a key/value store holds them
  Buf q_raw, k_raw;                              // Qwen3: q, k before their norms [N, *]
  Buf o_raw;     // Gemma: the attention's output before its norm [N, H] (y_dense: the MLP's)
  Buf y_dense;   // the dense MLP's output [N, H] (a scratch)
  Buf saved[7];  // LayerProducts state of kQ .. kDown
  Buf probs;     // MoE router softmax [N, E]
  std::vector<int64_t> topi;  // [N, K]
  Buf topw;                   // renormalised top-k weights [N, K]
  std::vector<ExpertActivations> experts;
};

// Where a layer's keys and values go: positions [row0, row0 + N) of k, v [nkv, capacity, hd] (the
// KV cache, model/kv_cache.h), or, with dest, position dest[i] for the pass's row i (several
// sequences' caches in one store: each new row lands after its own sequence's keys).
struct KeyValueRows {
  float* k = nullptr;
  float* v = nullptr;
  int64_t capacity = 0;
  int64_t row0 = 0;
  const int64_t* dest = nullptr;
};

// x [N, H] in place from the layer's input to its output, keeping in s what the backward needs.
// kv null: keys and values are kept in s.k / s.v (training). dense_mlp false: stop after the
// attention half's residual with xn2 computed (the backward's rerun recomputes the MLP itself).
void decoder_layer_forward(const LayerPass& pass, int64_t layer, const LayerWeights& lw,
                           LayerProducts& prod, float* x, LayerActivations& s,
                           const KeyValueRows* kv = nullptr, bool dense_mlp = true);

// Mixtral's load-balancing loss as it enters the router's backward: coef * E * count_e / R^2 is
// added to every counted row's d p_e (R = layers * counted positions).
struct RouterAuxLoss {
  double coef = 0, rows = 1;
  const std::vector<int64_t>* expert_count = nullptr;
};

// Gradient buffers reused across layers.
struct LayerGradScratch {
  Buf dtmp, dxn, dq, dk, dv, datt, dh, dg, du, dy, gain;
};

// Where the gradients of a layer's vectors go (added to; null: not wanted).
struct LayerVectorGrads {
  float *attn_norm = nullptr, *mlp_norm = nullptr;  // [H]
  float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
  float *q_norm = nullptr, *k_norm = nullptr;                 // [hd]
  float *post_attn_norm = nullptr, *post_mlp_norm = nullptr;  // Gemma [H]
};

// dx [N, H]: the gradient at the layer's output in, at its input out. The vectors' gradients
// go to vg, the products' through prod.
void decoder_layer_backward(const LayerPass& pass, int64_t layer, const LayerWeights& lw,
                            LayerProducts& prod, LayerActivations& s, float* dx,
                            const LayerVectorGrads& vg, const RouterAuxLoss& aux,
                            LayerGradScratch& g);

}  // namespace lamina
