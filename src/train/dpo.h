// Preference optimisation (DPO and variants, TRL's formulas) on the shared training loop. Each
// pair is one packed row: the chosen and the rejected sequence as two segments (attention kept
// inside each), completion tokens marked by weight 1. A step runs a forward pass for the
// sequence log-probabilities, the loss and its derivative per pair, then a backward pass with
// token weights -dL/dlogp, which gives exactly the DPO gradient.
#pragma once
#include <optional>
#include <string>

#include "tokenizer/chat_template.h"
#include "train/loop.h"

namespace lamina {

enum class DpoLossType { Sigmoid, Robust, Hinge, Ipo };
DpoLossType parse_dpo_loss(const std::string& name);  // sigmoid, robust, hinge, ipo

struct DpoConfig {
  DpoLossType loss = DpoLossType::Sigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // conservative DPO (sigmoid) / robust DPO's epsilon
  bool reference_free = false;
  double rpo_alpha = 0.0;  // RPO (TRL's rpo_alpha): + alpha * NLL of the chosen completions
};

struct DpoTerms {
  double loss, d_chosen, d_rejected;  // the loss and its derivatives w.r.t. the policy's log-probs
};
// logits = (pc - pr) - (rc - rr); sigmoid: -logσ(βz)(1-ε) - logσ(-βz)ε; robust:
// (-logσ(βz)(1-ε) + logσ(-βz)ε)/(1-2ε); hinge: relu(1 - βz); ipo: (z - 1/(2β))^2.
DpoTerms dpo_loss(const DpoConfig& c, double pc, double pr, double rc, double rr);

class DpoObjective : public Objective {
 public:
  explicit DpoObjective(DpoConfig c) : c_(c) {}
  using Objective::run;
  StepTotals totals(const MicroBatches& micro) const override;
  ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                      bool backward, const StepTotals& step) const override;

 private:
  DpoConfig c_;
};

struct DpoOptions {
  std::string data;       // TRL preference JSONL
  std::string eval_data;  // held-out pairs for eval metrics (default: --val-fraction of data)
  std::string ref_model;  // default: the starting policy (DPO on top of DPO)
  DpoConfig cfg;
  int64_t max_length = 0;            // prompt + completion; 0: seq_len / 2
  int64_t max_prompt_length = 0;     // 0: no limit (TRL 1.16 has none)
  bool prompt_keep_start = true;     // TRL 1.16 truncation_mode: keep_start (default) or keep_end
  std::optional<ChatTemplate> tmpl;  // for conversational rows (default: the model's)
  bool strict = false;
};

TrainResult run_dpo(const TrainOptions& train, const DpoOptions& dpo);

// lamina data binarize-ultrafeedback: mean aspect rating per completion, chosen = the highest,
// rejected = a random lower-rated one (seeded), ties dropped, sources excludable. Returns pairs
// written.
int64_t binarize_ultrafeedback(const std::string& in, const std::string& out, uint64_t seed,
                               const std::vector<std::string>& exclude_sources);

}  // namespace lamina
