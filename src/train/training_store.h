// The parameters a run trains: the model loaded as the options say (F32 throughout; a frozen base
// kept out of F32 with --base-dtype; a GGUF file as a LoRA base), then frozen / given adapters.
#pragma once
#include <string>

#include "train/params.h"
#include "train/train_options.h"

namespace lamina {

// The store a run trains, loaded from dir (default o.model): F32 throughout, or with
// --base-dtype the frozen tensors kept as FrozenBase says (refused when nothing is frozen).
ParamStore load_training_store(const TrainOptions& o, const std::string& dir = "");
// Applies the options' freezing / LoRA to p (after any vocabulary change) and checks the output
// directory; shared by pretrain, sft and dpo.
void prepare_training(const TrainOptions& o, ParamStore& p);

}  // namespace lamina
