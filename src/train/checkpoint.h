// Checkpoints of a training run: OUT/checkpoint-N holds the model (or the PEFT adapter), the F32
// value and both AdamW moments of every trainable tensor (optimizer.safetensors) and
// trainer_state.json with the run's signature, so that --resume continues only the same run.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "train/optimizer.h"
#include "train/params.h"
#include "train/train_options.h"

namespace lamina {

// The tokenizer files saved with every checkpoint come from tokenizer_dir (default: the model);
// extra_files are written into every checkpoint too (e.g. generation_config.json for SFT).
struct CheckpointExtras {
  std::string tokenizer_dir;
  std::map<std::string, std::string> files;
};

// The training run's fixed choices: a checkpoint resumes only a run with the same ones.
nlohmann::json run_signature(const TrainOptions& o, const std::string& data_signature);
// A complete model directory: tokenizer files from src_model, config.json, weights in dtype.
void save_model_dir(const ParamStore& p, const std::string& src_model, const std::string& dir,
                    DType dtype, uint64_t shard);
// OUT/checkpoint-STEP written atomically; older checkpoints beyond o.keep removed.
void save_checkpoint(const TrainOptions& o, const ParamStore& p, AdamW& opt, int64_t step,
                     const nlohmann::json& sig, DType dtype, const CheckpointExtras& extras);
// The newest complete checkpoint-N directory under `out` ("" when none); its step in *step.
std::string latest_checkpoint(const std::string& out, int64_t* step = nullptr);
// The trainable tensors' values and moments and the optimizer step from checkpoint ck; refused
// when it was written by a run with another signature.
void load_checkpoint_state(const std::string& ck, const nlohmann::json& sig, ParamStore& p,
                           AdamW& opt);
// metrics.jsonl's lines up to `step` (what an interrupted run logged after it dropped).
std::string metrics_up_to(const std::string& metrics_path, int64_t step);

}  // namespace lamina
