// The training loop every trainer shares (pretrain, sft, dpo).
#pragma once
#include <memory>
#include <string>

#include "io/file_lock.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/objective.h"
#include "train/params.h"
#include "train/train_options.h"
#include "train/training_store.h"

namespace lamina {

// Creates the run directory o.out and locks it (DIR/.lamina.lock) for the caller's lifetime: a
// second run into the same --out fails at once. Rank 0 alone holds it under MPI (null elsewhere).
std::unique_ptr<RunDirLock> lock_run(const TrainOptions& o);
// The training loop over any data: rows in seeded order, gradient accumulation with the loss
// normalised by the step's total target weight, clipping, schedule, AdamW, eval, checkpoints,
// resume, metrics and the loss plot. `title` names the run in the plot.
TrainResult train_loop(const TrainOptions& o, ParamStore& p, const TrainData& data,
                       const CheckpointExtras& extras, const std::string& title,
                       const Objective* objective = nullptr);

}  // namespace lamina
