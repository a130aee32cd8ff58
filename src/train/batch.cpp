#include "train/batch.h"

#include "train/train_graph.h"

namespace lamina {

void pad_row(TrainRow& r, int64_t T, int32_t pad) {
  const int64_t fill = T - int64_t(r.tokens.size());
  if (fill <= 0) return;
  r.tokens.insert(r.tokens.end(), size_t(fill), pad);
  r.targets.insert(r.targets.end(), size_t(fill), -1);
  r.weights.insert(r.weights.end(), size_t(fill), 0.0f);
  r.segments.push_back(int32_t(fill));
}

Batch make_batch(const std::vector<TrainRow>& rows, int64_t T) {
  Batch b;
  b.B = int64_t(rows.size());
  b.T = T;
  for (auto& r : rows) {
    b.tokens.insert(b.tokens.end(), r.tokens.begin(), r.tokens.end());
    b.targets.insert(b.targets.end(), r.targets.begin(), r.targets.end());
    b.weights.insert(b.weights.end(), r.weights.begin(), r.weights.end());
    b.segments.push_back(r.segments);
  }
  return b;
}

}  // namespace lamina
