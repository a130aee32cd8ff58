// Forward and backward of a causal LM (llama, mistral, mixtral, qwen2, qwen3) over a batch, in F32,
// for training; the layers are model/decoder_block's. Function pairs over saved activations
// (llm.c's shape): forward keeps what backward needs, backward walks the layers in reverse and
// accumulates into ParamStore::grads.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "train/params.h"

namespace lamina {

// B sequences of T tokens. targets[i] is the id to predict at row i (-1: no loss there);
// weights[i] scales that row's loss term (1 for plain language modelling; C-RLFT's class weights
// and SFT's prompt masking use it later).
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;
  // Packing: per row, the lengths of the sequences packed into it (summing to T); attention stays
  // inside each and positions restart. Empty: every row is one sequence.
  std::vector<std::vector<int32_t>> segments;
  // MoE load-balancing loss: the positions [B * T] it counts, as transformers' attention_mask in
  // load_balancing_loss_func (padding left out). Empty: every position counts.
  std::vector<uint8_t> aux_mask;
  // Next-token LM batch from rows of T+1 ids: tokens = ids[:-1], targets = ids[1:], weight 1.
  static Batch language_model(const std::vector<std::vector<int32_t>>& rows);
  int64_t num_targets() const;
};

struct StepStats {
  double loss_sum = 0;    // sum of w * cross-entropy over scored rows
  double weight_sum = 0;  // sum of w over scored rows
  int64_t tokens = 0;     // scored rows
  double aux_loss = 0;    // Mixtral load-balancing loss (unweighted), 0 for dense models
};

class TrainGraph {
 public:
  explicit TrainGraph(ParamStore& p);
  ~TrainGraph();
  // Loss = sum(w * CE) / normalizer + aux_coef * aux (Mixtral). Gradients of that loss are
  // added to p.grads when backward. normalizer is the step's total target weight, so micro-batches
  // of one optimizer step add up to the mean over the whole step (not a mean of means).
  //
  // reweight (DPO): called once the forward has every row's log p(target) (token_logprobs()),
  // to set the per-row weights of the backward pass from them: objectives whose token weights
  // depend on the whole sequence's log-probability get their gradient from this single forward.
  // The LM head is then run a second time, chunk by chunk, for its gradient.
  using Reweight = std::function<void(const std::vector<float>& logprobs, std::vector<float>& w)>;
  StepStats step(const Batch& b, double normalizer, double aux_coef, bool backward = true,
                 const Reweight& reweight = nullptr);
  // log p(target) for every row (0 where target < 0), from the last step() call.
  const std::vector<float>& token_logprobs() const { return logprobs_; }
  // Activation recomputation (gradient checkpointing): keep only each layer's input during the
  // forward and run the layer again in backward. Same gradients, ~1/3 more compute, activation
  // memory of one layer instead of all.
  void set_recompute(bool on) { recompute_ = on; }
  // With recomputation: keep each layer's input rounded to bf16 instead of F32 (half the memory:
  // 0.4 instead of 0.8 GB for 48 layers of 1024 x 4096). The loss and the forward are unchanged;
  // the backward's rerun of a layer starts from its rounded input, so the gradients are those at
  // a point within bf16 rounding of the forward's (as transformers' checkpointing of a bf16 model,
  // whose hidden states are bf16 throughout).
  void set_recompute_bf16_inputs(bool on) { recompute_bf16_ = on; }
  // With recomputation: rows per chunk of the dense MLP's backward (0: about 2M floats of the
  // intermediate width per chunk, at least 64 rows). Tests set small values to cross chunks.
  void set_mlp_chunk_rows(int64_t n) { mlp_chunk_rows_ = n; }
  // Keys the dropout masks of the next step() calls (the training loop sets it per step).
  void set_dropout_key(uint64_t k) { dropout_key_ = k; }

 private:
  struct Acts;
  ParamStore& p_;
  Acts* a_;
  std::vector<float> logprobs_;
  bool recompute_ = false, recompute_bf16_ = false;
  int64_t mlp_chunk_rows_ = 0;
  uint64_t dropout_key_ = 0;
};

}  // namespace lamina
