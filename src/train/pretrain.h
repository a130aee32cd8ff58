// Continued pretraining on raw text (SOLAR's step after depth up-scaling): windows of a tokenized
// corpus through the shared training loop (train/loop.h).
#pragma once
#include "train/loop.h"

namespace lamina {

TrainResult run_pretrain(const TrainOptions& opt);

}  // namespace lamina
