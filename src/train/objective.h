// What a training step minimises over its micro-batches: the weighted cross-entropy of
// pretraining / SFT / C-RLFT, or DPO's preference losses (train/dpo.cpp).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "train/batch.h"

namespace lamina {

class TrainGraph;

// What a training step minimises, over the step's micro-batches (rows of length T).
struct ObjectiveResult {
  double loss = 0, aux = 0;
  nlohmann::json metrics =
      nlohmann::json::object();  // extra per-step numbers (TRL's names for DPO)
};
// Sums over a whole optimizer step that normalise its loss; they add up over micro-batches and
// over the ranks of a data-parallel job (core/dist.h).
struct StepTotals {
  double weight = 0;         // target weight: cross-entropy's normaliser
  double pairs = 0;          // DPO pairs
  double chosen_tokens = 0;  // RPO's NLL normaliser
  double micro = 0;          // micro-batches: the MoE aux loss is their mean
};
using MicroBatches = std::vector<std::vector<TrainRow>>;
class Objective {
 public:
  virtual ~Objective() = default;
  // The totals of these micro-batches (default: target weight and count).
  virtual StepTotals totals(const MicroBatches& micro) const;
  // With backward, adds the gradient of the step's loss to the parameters' gradients, normalised
  // by `step` (the whole step's totals, all ranks). Returns this call's share of the loss, aux and
  // metrics: the shares of all ranks add up to the step's values.
  virtual ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                              bool backward, const StepTotals& step) const = 0;
  // These micro-batches are the whole step.
  ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                      bool backward) const {
    return run(g, micro, T, aux_coef, backward, totals(micro));
  }
};
// sum(w * CE) / sum(w) over the whole step (pretraining, SFT, C-RLFT).
class WeightedCrossEntropy : public Objective {
 public:
  using Objective::run;
  ObjectiveResult run(TrainGraph& g, const MicroBatches& micro, int64_t T, double aux_coef,
                      bool backward, const StepTotals& step) const override;
};

}  // namespace lamina
