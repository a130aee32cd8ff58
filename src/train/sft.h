// Supervised fine-tuning and OpenChat's C-RLFT on conversation data: sources with a class
// condition and a coarse reward (a loss weight), templated tokenisation with per-token weights,
// vocabulary growth for the template's tokens, packing, then the shared training loop.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"
#include "train/loop.h"

namespace lamina {

struct SftSource {
  std::string name, path;
  float weight = 1.0f;
  std::string condition;
};
// "gpt4=data/gpt4.jsonl:weight=1.0:condition=GPT4" (name and options optional: "data.jsonl").
SftSource parse_source(const std::string& spec);

struct SftOptions {
  std::vector<SftSource> sources;
  std::string objective = "sft";     // sft (every source weight 1, one condition) or crlft
  std::optional<ChatTemplate> tmpl;  // default: crlft -> openchat, else the model's, else openchat
  std::string inference_condition;   // stored with the model; default: the best source's condition
  bool train_on_prompts = false;
  bool strict = false;
  bool per_sequence_loss = false;  // ochat's: each message's weight spread over its tokens
};

TrainResult run_sft(const TrainOptions& train, const SftOptions& sft);

}  // namespace lamina
