// Evaluation tasks as YAML (in the spirit of lm-evaluation-harness): data, prompt template with
// {{field}} placeholders, few-shot selection and delimiters, scoring type and metrics.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/answer_filter.h"
#include "eval/python_random.h"

namespace lamina {

struct EvalTask {
  std::string name;
  std::string type = "multiple_choice";  // multiple_choice | generate
  std::string data, fewshot_data;  // JSONL paths (fewshot: defaults to data, excluding the item)
  std::string description;         // prefix before the few-shot examples (template)
  std::string doc_to_text;         // the question part (template)
  std::string doc_to_target;       // mc: gold index field or template; generate: the answer
  std::string choices_field = "choices";  // mc: a list field
  std::string doc_to_choice;              // mc: lm-eval's Jinja expression giving the list
  std::vector<std::string> choices;       // mc: the same choices for every item (MMLU's A-D)
  bool choice_in_context = false;         // Winogrande's partial scoring: choices fill the context
  std::string labels_field;               // mc2: list of 0/1 per choice
  bool mc2_hook = false;                  // lm-eval's utils.process_results_mc2 named the metric
  int64_t num_fewshot = 0;
  // lm-eval's samplers: "default" draws with Python's random.Random(fewshot_seed).sample, one call
  // per item in order (state carried over, as the harness does); "first_n" takes the first k.
  std::string fewshot_sampler = "default";
  uint64_t fewshot_seed = 1234;  // lm-eval's fewshot_random_seed default
  // lm-eval hands the scored item to its sampler when the task's fewshot_split equals its
  // test_split (so also when both are unset, as in HellaSwag and Winogrande): the sampler then
  // draws k + 1 and drops copies of the item. Always so when the examples come from the data.
  bool fewshot_draws_extra = false;
  std::string preprocess;                  // raw dataset rows -> fields (eval/dataset_rows.h)
  std::string harness = "lm-eval 0.4.13";  // the harness version the definition reproduces
  std::string bos = "auto";                // auto | always | never (see EvalSettings::bos)
  std::string target_delimiter = " ", fewshot_delimiter = "\n\n";
  std::vector<std::string> metrics;  // acc, acc_norm, mc2, exact_match
  // generate
  std::vector<std::string> until;
  int64_t max_new_tokens = 256;
  std::string answer_regex;  // extraction from the generation and the target
  // lm-eval 0.4.x generation scoring: each filter gives metric exact_match,<name>; the reference
  // is doc_to_target as rendered, both compared under match_rules. Replaces answer_regex.
  std::vector<AnswerFilter> filters;
  ExactMatchRules match_rules;
  bool chat = false;  // wrap the prompt in the model's chat template
};

// Loads a task; relative data paths resolve against the YAML's directory; `where` in errors.
EvalTask load_task(const std::string& yaml_path);
// Objects of a JSONL file; lines (if given) receives each object's line number.
std::vector<nlohmann::json> read_jsonl(const std::string& path,
                                       std::vector<int64_t>* lines = nullptr);

// A task template rendered against a document: Jinja's `{{ expression }}` and `{% set %}` as
// lm-eval writes them (eval/template_expr.h); an unknown field is an error naming the template.
std::string render_template(const std::string& tmpl, const nlohmann::json& doc,
                            const std::string& where);

// The few-shot examples of every item, in item order, as lm-eval 0.4.13's samplers draw them.
// same_pool: the demonstrations come from the scored data itself (lm-eval's few-shot split equal
// to the test split): the harness then draws k + 1 and drops copies of the item.
// rnd: the task's generator (PythonRandom(fewshot_seed); for lm-eval b281b09, the Random(42)
// that first shuffled the items).
std::vector<std::vector<nlohmann::json>> fewshot_examples(const EvalTask& t,
                                                          const std::vector<nlohmann::json>& docs,
                                                          const std::vector<nlohmann::json>& pool,
                                                          bool same_pool, PythonRandom& rnd);

// The choices of a multiple-choice item and the gold index.
std::vector<std::string> doc_choices(const EvalTask& t, const nlohmann::json& doc);
int64_t doc_gold(const EvalTask& t, const nlohmann::json& doc);

// The text of one example as a few-shot demonstration: question + delimiter + answer.
std::string fewshot_text(const EvalTask& t, const nlohmann::json& doc);
// The context for item doc (description + few-shot examples + its question); for
// choice_in_context tasks, per choice.
std::string build_context(const EvalTask& t, const std::vector<nlohmann::json>& shots,
                          const nlohmann::json& doc, const std::string& question_text);

}  // namespace lamina
