#include "train/objective.h"

#include <cmath>

#include "train/batch.h"
#include "train/train_graph.h"

namespace lamina {

StepTotals Objective::totals(const MicroBatches& micro) const {
  StepTotals t;
  t.micro = double(micro.size());
  for (auto& rows : micro)
    for (auto& row : rows)
      for (size_t i = 0; i < row.targets.size(); ++i)
        if (row.targets[i] >= 0) t.weight += row.weights[i];
  return t;
}

ObjectiveResult WeightedCrossEntropy::run(TrainGraph& g, const MicroBatches& micro, int64_t T,
                                          double aux_coef, bool backward,
                                          const StepTotals& step) const {
  // The step's total target weight normalises: micro-batches (and ranks) add up to one mean.
  double loss_sum = 0;
  ObjectiveResult r;
  for (auto& rows : micro) {
    auto st = g.step(make_batch(rows, T), step.weight, aux_coef / step.micro, backward);
    loss_sum += st.loss_sum, r.aux += st.aux_loss / step.micro;
  }
  r.loss = step.weight > 0 ? loss_sum / step.weight : NAN;
  return r;
}

}  // namespace lamina
