// lamina pretrain: continued pretraining of a HF model directory on raw text.
#include "commands.h"
#include "train/pretrain.h"

namespace lamina {

int cmd_pretrain(int argc, char** argv) {
  Args a("pretrain",
         "Continue pretraining a model on plain text (.txt, documents separated by blank lines) or "
         "JSONL with a\n"
         "\"text\" field: documents joined with EOS, packed into --seq-len windows, tokenised once "
         "and cached.\n"
         "Writes OUT/metrics.jsonl, OUT/loss.svg and OUT/checkpoint-STEP/ (a complete HF model "
         "directory plus\n"
         "optimizer.safetensors and trainer_state.json; the last one is the final model). --config "
         "takes the\n"
         "same options from a YAML file (keys as below, '_' or '-'); the command line wins.",
         join_specs(training_arg_specs(),
                    std::vector<ArgSpec>{
                        {"data", "FILE", "training text (.txt or .jsonl)", kRequired, true},
                        {"cache-dir", "DIR", "token cache (default: OUT/.cache)", ""}}));
  if (!a.parse(argc, argv)) return 0;
  if (a.given("config")) a.merge_yaml(a.str("config"));
  TrainOptions o = training_options(a);
  o.data = a.all("data");
  o.cache_dir = a.str("cache-dir");
  print_training_result(run_pretrain(o));
  return 0;
}

}  // namespace lamina
