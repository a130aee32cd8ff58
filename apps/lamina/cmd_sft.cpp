// lamina sft: supervised fine-tuning and OpenChat's C-RLFT on conversation data.
#include "commands.h"
#include "core/error.h"
#include "train/sft.h"

namespace lamina {

int cmd_sft(int argc, char** argv) {
  Args a(
      "sft",
      "Fine-tune on conversations (JSONL: OpenChat items, OpenAI messages, ShareGPT, Alpaca). "
      "Plain SFT learns\n"
      "every assistant turn with weight 1 (completion-only loss). --objective crlft is OpenChat's "
      "C-RLFT: each\n"
      "--source is a class with a condition in the prompt (\"{condition} User: "
      "...<|end_of_turn|>\") and a\n"
      "coarse reward used as the weight of its assistant tokens; the loss is sum(w * CE) / sum(w) "
      "over each\n"
      "optimizer step. Conversations are packed several per row (first-fit-decreasing) with "
      "attention kept\n"
      "inside each. Tokens the template needs are added (embedding and LM head grow, new rows = "
      "mean). The\n"
      "checkpoints record the chat template and the inference condition for generate --chat and "
      "chat.",
      join_specs(
          training_arg_specs(),
          std::vector<ArgSpec>{
              {"data", "FILE", "conversations (one source, weight 1)", "", true},
              {"source", "NAME=FILE:weight=W:condition=C", "a C-RLFT source (class)", "", true},
              {"objective", "sft|crlft", "plain SFT or conditioned, weighted C-RLFT", "sft"},
              {"template", "NAME",
               "a built-in template instead of the model's own: openchat, chatml, llama-2, "
               "mistral-instruct (default: crlft -> openchat, else the model's Jinja "
               "chat_template, else openchat)",
               ""},
              {"inference-condition", "TEXT",
               "condition to use at inference (default: the highest-weight "
               "source's; plain SFT: GPT4 Correct)",
               ""},
              {"train-on-prompts", "", "also learn user and system text (weight of the source)",
               ""},
              {"loss-norm", "token|sequence",
               "weighted token mean over the step, or sequence: ochat's per_sequence_loss (each "
               "message's weight spread over its tokens)",
               "token"},
              {"strict", "", "stop at the first malformed line (default: skip and count)", ""}}));
  if (!a.parse(argc, argv)) return 0;
  if (a.given("config")) a.merge_yaml(a.str("config"));
  TrainOptions o = training_options(a);
  SftOptions s;
  for (auto& d : a.all("data")) s.sources.push_back(parse_source(d));
  for (auto& d : a.all("source")) s.sources.push_back(parse_source(d));
  s.objective = a.str("objective");
  if (a.given("template")) s.tmpl = parse_chat_template(a.str("template"), "--template");
  s.inference_condition = a.str("inference-condition");
  s.train_on_prompts = a.flag("train-on-prompts");
  s.strict = a.flag("strict");
  const std::string norm = a.str("loss-norm");
  if (norm != "token" && norm != "sequence")
    fail("--loss-norm: expected token or sequence, got '", norm, "'");
  s.per_sequence_loss = norm == "sequence";
  print_training_result(run_sft(o, s));
  return 0;
}

}  // namespace lamina
