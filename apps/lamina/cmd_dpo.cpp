// lamina dpo: preference optimisation (DPO, conservative DPO, robust, hinge, IPO) on TRL data.
#include "commands.h"
#include "core/error.h"
#include "train/dpo.h"

namespace lamina {

int cmd_dpo(int argc, char** argv) {
  Args a("dpo",
         "Align a model on preference pairs, prepared as TRL 1.16.0's DPOTrainer does: prompt, "
         "chosen, rejected as\n"
         "strings (used as they are, EOS appended) or message lists (through the chat template); "
         "without \"prompt\"\n"
         "the shared prefix of chosen and rejected is the prompt. The loss uses sequence "
         "log-probabilities summed\n"
         "over completion tokens (IPO: averaged), chosen and rejected packed in one row. The "
         "reference is the\n"
         "starting policy (DPO on top of DPO) unless --ref-model; its log-probabilities are "
         "computed once and\n"
         "cached in OUT/.cache. Metrics use TRL's names (rewards/chosen, rewards/margins, ...).",
         join_specs(
             training_arg_specs(),
             std::vector<ArgSpec>{
                 {"data", "FILE", "preference pairs (JSONL)", kRequired},
                 {"eval-data", "FILE",
                  "held-out pairs for the eval metrics (default: --val-fraction of --data)", ""},
                 {"loss", "NAME", "sigmoid (DPO), robust, hinge or ipo", "sigmoid"},
                 {"beta", "B", "DPO beta", "0.1"},
                 {"label-smoothing", "E", "conservative DPO / robust epsilon", "0"},
                 {"rpo-alpha", "A", "RPO: add A x the NLL of the chosen completions", "0"},
                 {"ref-model", "DIR", "reference model (default: the starting policy)", ""},
                 {"no-reference", "", "reference-free variant (reference log-probs 0)", ""},
                 {"max-length", "N",
                  "tokens per sequence, prompt + completion (default: --seq-len / 2)", "0"},
                 {"max-prompt-length", "N",
                  "keep only the prompt's last N tokens after BOS (0: no limit, as TRL 1.16)", "0"},
                 {"truncation-mode", "keep_start|keep_end",
                  "an over-long sequence keeps its first (TRL 1.16's default) or last max-length "
                  "tokens",
                  "keep_start"},
                 {"template", "NAME",
                  "a built-in chat template (openchat, chatml, llama-2, mistral-instruct) instead "
                  "of the model's own Jinja chat_template",
                  ""},
                 {"cache-dir", "DIR", "reference log-prob cache (default: OUT/.cache)", ""},
                 {"strict", "", "stop at the first malformed line", ""}}));
  if (!a.parse(argc, argv)) return 0;
  if (a.given("config")) a.merge_yaml(a.str("config"));
  TrainOptions o = training_options(a);
  o.cache_dir = a.str("cache-dir");
  DpoOptions d;
  d.data = a.str("data");
  d.eval_data = a.str("eval-data");
  d.cfg.loss = parse_dpo_loss(a.str("loss"));
  d.cfg.beta = a.number("beta");
  d.cfg.label_smoothing = a.number("label-smoothing");
  d.cfg.rpo_alpha = a.number("rpo-alpha");
  d.cfg.reference_free = a.flag("no-reference");
  d.ref_model = a.str("ref-model");
  d.max_length = a.integer("max-length");
  d.max_prompt_length = a.integer("max-prompt-length");
  if (a.given("template")) d.tmpl = parse_chat_template(a.str("template"), "--template");
  d.strict = a.flag("strict");
  const std::string tm = a.str("truncation-mode");
  if (tm != "keep_end" && tm != "keep_start")
    fail("--truncation-mode: expected keep_end or keep_start, got '", tm, "'");
  d.prompt_keep_start = tm == "keep_start";
  if (d.cfg.beta <= 0) fail("--beta must be positive");
  print_training_result(run_dpo(o, d));
  return 0;
}

int cmd_data(int argc, char** argv) {
  if (argc < 1 || std::string(argv[0]) != "binarize-ultrafeedback")
    fail(
        "usage: lamina data binarize-ultrafeedback --in FILE --out FILE [--seed S] "
        "[--exclude-source NAME]");
  Args a("data binarize-ultrafeedback",
         "UltraFeedback-style records (instruction, completions with per-aspect ratings) -> TRL "
         "preference pairs, as\n"
         "Argilla's cleaned set: mean of the aspect ratings, chosen = the highest, rejected = a "
         "random completion\n"
         "rated lower (seeded), rows whose completions all tie dropped.",
         {{"in", "FILE", "UltraFeedback JSONL", kRequired},
          {"out", "FILE", "preference JSONL", kRequired},
          {"seed", "S", "seed for picking the rejected completion", "42"},
          {"exclude-source", "NAME", "drop rows from this source (e.g. truthful_qa)", "", true}});
  if (!a.parse(argc - 1, argv + 1)) return 0;
  int64_t n = binarize_ultrafeedback(a.str("in"), a.str("out"), uint64_t(a.integer("seed")),
                                     a.all("exclude-source"));
  std::printf("wrote %s: %lld pairs\n", a.str("out").c_str(), (long long)n);
  return 0;
}

}  // namespace lamina
