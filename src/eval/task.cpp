#include "eval/task.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "eval/dataset_rows.h"
#include "eval/python_random.h"
#include "eval/template_expr.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/yaml_file.h"

namespace lamina {
using json = nlohmann::json;
namespace fs = std::filesystem;

std::vector<json> read_jsonl(const std::string& path, std::vector<int64_t>* lines) {
  std::vector<json> out;
  for_each_jsonl_line(path, [&](const std::string& line, int64_t n) {
    const std::string where = path + ":" + std::to_string(n);
    out.push_back(parse_json_line(line, where));
    if (!out.back().is_object()) fail(where, ": expected a JSON object");
    if (lines) lines->push_back(n);
  });
  return out;
}

namespace {

// What lm-evaluation-harness's `!function module.name` hooks of the shipped tasks do, done
// natively: (hook, what it becomes). Other Python hooks cannot run here and are refused by name.
bool apply_harness_function(EvalTask& t, const std::string& key, const std::string& fn,
                            const std::string& dir_name) {
  if (key == "process_docs" && fn == "utils.process_docs" &&
      (t.name.find("hellaswag") != std::string::npos || dir_name == "hellaswag"))
    return t.preprocess = "hellaswag", true;
  if (fn.rfind("preprocess_winogrande.", 0) == 0 &&
      (key == "doc_to_text" || key == "doc_to_target" || key == "doc_to_choice")) {
    // Partial scoring: each option completes the sentence up to the blank, the rest is scored.
    t.preprocess = "winogrande", t.choice_in_context = true, t.doc_to_text = "{{prefix}}{{choice}}";
    t.doc_to_target = "answer";
    return true;
  }
  if (key == "process_results" && fn == "utils.process_results_mc2") {
    // Its "acc" is mc2 over mc2_targets; metric_list naming acc keeps meaning that.
    t.mc2_hook = true, t.preprocess = "truthfulqa_mc2", t.labels_field = "labels";
    return true;
  }
  return false;
}

void apply_task_yaml(const std::string& path, EvalTask& t, int depth,
                     std::map<std::string, std::string>& splits) {
  if (!file_exists(path)) fail(path, ": task not found");
  if (depth > 8) fail(path, ": include nested more than 8 deep");
  YAML::Node y = load_yaml_file(path);
  if (!y.IsMap()) fail(path, ": a task definition is a mapping of keys");
  const std::string dir = fs::path(path).parent_path().string();
  auto resolve = [&](const std::string& p) {
    std::error_code ec;  // the non-throwing overloads: a path part over NAME_MAX is just absent
    if (p.empty() || fs::path(p).is_absolute() || fs::exists(p, ec)) return p;
    return (fs::path(dir) / p).string();
  };
  try {
    // lm-eval's include: the named definition first, this file's keys over it.
    if (y["include"])
      apply_task_yaml(resolve(yaml_as<std::string>(y["include"], path, "include")), t, depth + 1,
                      splits);
    for (auto it : y) {
      const std::string k = yaml_as<std::string>(it.first, path, "key");
      const YAML::Node& v = it.second;
      const int line = it.first.Mark().line + 1;
      if (v.Tag() == "!function") {
        const std::string fn = yaml_as<std::string>(v, path, k);
        if (!apply_harness_function(t, k, fn, fs::path(path).parent_path().filename().string()))
          fail(path, ":", line, ": ", k, ": !function ", fn,
               " is Python code; lamina runs natively only the shipped tasks' hooks (HellaSwag's "
               "utils.process_docs, preprocess_winogrande.*, TruthfulQA's "
               "utils.process_results_mc2)");
        continue;
      }
      if (k == "include") continue;
      // lm-eval's own keys, with the meaning its ConfigurableTask gives them.
      if (k == "output_type") {
        const std::string o = yaml_as<std::string>(v, path, k);
        if (o == "multiple_choice")
          t.type = "multiple_choice";
        else if (o == "generate_until")
          t.type = "generate";
        else
          fail(path, ":", line, ": output_type '", o, "' (multiple_choice or generate_until)");
        continue;
      }
      if (k == "doc_to_choice") {
        if (v.IsSequence())
          t.choices = yaml_as<std::vector<std::string>>(v, path, k);
        else
          t.doc_to_choice = yaml_as<std::string>(v, path, k);
        continue;
      }
      if (k == "doc_to_target" && v.IsScalar() && !v.Scalar().empty() &&
          v.Scalar().find_first_not_of("0123456789") == std::string::npos) {
        t.doc_to_target = "{{" + v.Scalar() + "}}";  // a fixed gold index (TruthfulQA: 0)
        continue;
      }
      if (k == "metric_list") {
        t.metrics.clear();
        for (auto m : v) {
          const std::string name = yaml_as<std::string>(m["metric"], path, "metric_list.metric");
          t.metrics.push_back(name);
          if (m["regexes_to_ignore"])
            t.match_rules.regexes_to_ignore = yaml_as<std::vector<std::string>>(
                m["regexes_to_ignore"], path, "regexes_to_ignore");
          if (m["ignore_case"])
            t.match_rules.ignore_case = yaml_as<bool>(m["ignore_case"], path, k);
          if (m["ignore_punctuation"])
            t.match_rules.ignore_punctuation = yaml_as<bool>(m["ignore_punctuation"], path, k);
        }
        continue;
      }
      if (k == "generation_kwargs") {
        if (v["until"]) t.until = yaml_as<std::vector<std::string>>(v["until"], path, "until");
        if (v["max_gen_toks"]) t.max_new_tokens = yaml_as<int64_t>(v["max_gen_toks"], path, k);
        if (v["do_sample"] && yaml_as<bool>(v["do_sample"], path, k))
          fail(path, ":", line,
               ": generation_kwargs.do_sample: true (lamina's --temperature samples)");
        continue;
      }
      if (k == "filter_list") {
        t.filters.clear();
        for (auto f : v) {
          AnswerFilter af;
          af.name = yaml_as<std::string>(f["name"], path, "filter_list.name");
          for (auto step : f["filter"]) {
            const std::string fn = yaml_as<std::string>(step["function"], path, "filter.function");
            if (fn == "regex") {
              af.regex = yaml_as<std::string>(step["regex_pattern"], path, "regex_pattern");
              if (step["group_select"])
                af.group_select = yaml_as<int64_t>(step["group_select"], path, k);
              if (step["fallback"]) af.fallback = yaml_as<std::string>(step["fallback"], path, k);
            } else if (fn != "take_first") {
              fail(path, ":", step.Mark().line + 1, ": filter function '", fn,
                   "' (regex, take_first)");
            }
          }
          if (af.regex.empty())
            fail(path, ":", f.Mark().line + 1, ": filter ", af.name, " has no regex");
          t.filters.push_back(af);
        }
        continue;
      }
      if (k == "fewshot_config") {
        for (auto kv : v) {
          const std::string fk = yaml_as<std::string>(kv.first, path, "fewshot_config key");
          if (fk == "sampler")
            t.fewshot_sampler = yaml_as<std::string>(kv.second, path, k);
          else
            fail(path, ":", kv.first.Mark().line + 1, ": fewshot_config.", fk, " (sampler)");
        }
        continue;
      }
      if (k == "training_split" || k == "validation_split" || k == "test_split" ||
          k == "fewshot_split") {
        splits[k] = v.IsNull() ? "" : yaml_as<std::string>(v, path, k);
        continue;
      }
      if (k == "repeats") {
        if (yaml_as<int64_t>(v, path, k) != 1) fail(path, ":", line, ": repeats other than 1");
        continue;
      }
      // Where the harness downloads data from and what it logs: lamina reads --data files.
      if (k == "tag" || k == "task_alias" || k == "dataset_path" || k == "dataset_name" ||
          k == "dataset_kwargs" || k == "should_decontaminate" ||
          k == "doc_to_decontamination_query" || k == "metadata" || k == "group")
        continue;
      if (k == "task")
        t.name = yaml_as<std::string>(v, path, k);
      else if (k == "type")
        t.type = yaml_as<std::string>(v, path, k);
      else if (k == "data")
        t.data = resolve(yaml_as<std::string>(v, path, k));
      else if (k == "fewshot_data")
        t.fewshot_data = resolve(yaml_as<std::string>(v, path, k));
      else if (k == "description")
        t.description = yaml_as<std::string>(v, path, k);
      else if (k == "doc_to_text")
        t.doc_to_text = yaml_as<std::string>(v, path, k);
      else if (k == "doc_to_target")
        t.doc_to_target = yaml_as<std::string>(v, path, k);
      else if (k == "choices_field")
        t.choices_field = yaml_as<std::string>(v, path, k);
      else if (k == "choices")
        t.choices = yaml_as<std::vector<std::string>>(v, path, k);
      else if (k == "choice_in_context")
        t.choice_in_context = yaml_as<bool>(v, path, k);
      else if (k == "labels_field")
        t.labels_field = yaml_as<std::string>(v, path, k);
      else if (k == "num_fewshot")
        t.num_fewshot = yaml_as<int64_t>(v, path, k);
      else if (k == "fewshot_sampler")
        t.fewshot_sampler = yaml_as<std::string>(v, path, k);
      else if (k == "fewshot_seed")
        t.fewshot_seed = yaml_as<uint64_t>(v, path, k);
      else if (k == "target_delimiter")
        t.target_delimiter = yaml_as<std::string>(v, path, k);
      else if (k == "fewshot_delimiter")
        t.fewshot_delimiter = yaml_as<std::string>(v, path, k);
      else if (k == "metrics")
        t.metrics = yaml_as<std::vector<std::string>>(v, path, k);
      else if (k == "until")
        t.until = yaml_as<std::vector<std::string>>(v, path, k);
      else if (k == "max_new_tokens")
        t.max_new_tokens = yaml_as<int64_t>(v, path, k);
      else if (k == "answer_regex")
        t.answer_regex = yaml_as<std::string>(v, path, k);
      else if (k == "fewshot_draws_extra")
        t.fewshot_draws_extra = yaml_as<bool>(v, path, k);
      else if (k == "preprocess")
        t.preprocess = yaml_as<std::string>(v, path, k);
      else if (k == "harness")
        t.harness = yaml_as<std::string>(v, path, k);
      else if (k == "bos")
        t.bos = yaml_as<std::string>(v, path, k);
      else if (k == "filters") {
        if (!v.IsSequence()) fail(path, ":", v.Mark().line + 1, ": filters is a list");
        for (auto f : v) {
          AnswerFilter af;
          for (auto kv : f) {
            const std::string fk = yaml_as<std::string>(kv.first, path, "filters key");
            if (fk == "name")
              af.name = yaml_as<std::string>(kv.second, path, "filters.name");
            else if (fk == "regex")
              af.regex = yaml_as<std::string>(kv.second, path, "filters.regex");
            else if (fk == "group_select")
              af.group_select = yaml_as<int64_t>(kv.second, path, "filters.group_select");
            else if (fk == "fallback")
              af.fallback = yaml_as<std::string>(kv.second, path, "filters.fallback");
            else
              fail(path, ":", kv.first.Mark().line + 1, ": unknown filters key '", fk,
                   "' (name, regex, group_select, fallback)");
          }
          if (af.name.empty() || af.regex.empty())
            fail(path, ":", f.Mark().line + 1, ": a filter needs a name and a regex");
          t.filters.push_back(af);
        }
      } else if (k == "regexes_to_ignore") {
        t.match_rules.regexes_to_ignore = yaml_as<std::vector<std::string>>(v, path, k);
      } else if (k == "ignore_case")
        t.match_rules.ignore_case = yaml_as<bool>(v, path, k);
      else if (k == "ignore_punctuation")
        t.match_rules.ignore_punctuation = yaml_as<bool>(v, path, k);
      else if (k == "chat")
        t.chat = yaml_as<bool>(v, path, k);
      else
        fail(path, ": unknown key '", k, "'");
    }
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": ", e.msg);
  }
}

}  // namespace

EvalTask load_task(const std::string& path) {
  EvalTask t;
  std::map<std::string, std::string> splits;
  apply_task_yaml(path, t, 0, splits);
  // A harness definition: its sampler gets the item when fewshot_split == test_split (both
  // unset included), and its default split for examples is the first of train, validation, test.
  if (splits.count("test_split") || splits.count("training_split") || splits.count("fewshot_split"))
    t.fewshot_draws_extra = splits["fewshot_split"] == splits["test_split"];
  if (t.mc2_hook) t.metrics = {"mc2"};
  // Every pattern compiles before any work (from lamina's keys or the harness's filter_list and
  // metric_list alike).
  for (auto& f : t.filters) PyRegex(f.regex, path + ": filter " + f.name);
  for (auto& r : t.match_rules.regexes_to_ignore) PyRegex(r, path + ": regexes_to_ignore");
  if (t.type != "multiple_choice" && t.type != "generate")
    fail(path, ": type '", t.type, "' (multiple_choice or generate)");
  if (t.doc_to_text.empty()) fail(path, ": missing doc_to_text");
  // lamina's earlier names for the same two samplers.
  if (t.fewshot_sampler == "first") t.fewshot_sampler = "first_n";
  if (t.fewshot_sampler == "random") t.fewshot_sampler = "default";
  if (t.fewshot_sampler != "first_n" && t.fewshot_sampler != "default")
    fail(path, ": fewshot_sampler is default (lm-eval's seeded random draw) or first_n");
  if (!known_preprocessor(t.preprocess))
    fail(path, ": preprocess '", t.preprocess,
         "' (arc, hellaswag, mmlu, truthfulqa_mc2, winogrande, gsm8k)");
  if (t.harness != "lm-eval 0.4.13" && t.harness != "lm-eval b281b09")
    fail(path, ": harness '", t.harness, "' (lm-eval 0.4.13 or lm-eval b281b09)");
  if (t.bos != "auto" && t.bos != "always" && t.bos != "never")
    fail(path, ": bos is auto, always or never");
  if (t.metrics.empty())
    t.metrics = t.type == "generate" ? std::vector<std::string>{"exact_match"}
                                     : std::vector<std::string>{"acc"};
  if (!t.answer_regex.empty() && !t.filters.empty())
    fail(path, ": give filters or answer_regex, not both");
  for (auto& m : t.metrics)
    if (m != "acc" && m != "acc_norm" && m != "mc2" && m != "exact_match")
      fail(path, ": unknown metric '", m, "'");
  return t;
}

std::string render_template(const std::string& tmpl, const json& doc, const std::string& where) {
  return render_jinja(tmpl, doc, where);
}

std::vector<std::string> doc_choices(const EvalTask& t, const json& doc) {
  if (!t.choices.empty()) return t.choices;
  json list;
  if (t.doc_to_choice.find("{{") != std::string::npos) {
    list = evaluate_jinja(t.doc_to_choice, doc, t.name + " doc_to_choice");
  } else {
    const std::string field = t.doc_to_choice.empty() ? t.choices_field : t.doc_to_choice;
    auto it = doc.find(field);
    if (it == doc.end()) fail(t.name, ": item has no list field '", field, "'");
    list = *it;
  }
  if (!list.is_array() || list.empty())
    fail(t.name, ": the item's choices are not a non-empty list");
  std::vector<std::string> c;
  for (auto& x : list) c.push_back(x.is_string() ? x.get<std::string>() : python_repr(x));
  return c;
}

int64_t doc_gold(const EvalTask& t, const json& doc) {
  json g;
  if (t.doc_to_target.find("{{") != std::string::npos) {
    g = evaluate_jinja(t.doc_to_target, doc, t.name + " doc_to_target");
  } else {
    const std::string key = t.doc_to_target.empty() ? "gold" : t.doc_to_target;
    auto it = doc.find(key);
    if (it == doc.end()) fail(t.name, ": item has no gold field '", key, "'");
    g = *it;
  }
  if (g.is_number_integer()) return g.get<int64_t>();
  if (!g.is_string())
    fail(t.name, ": gold ", g.dump().substr(0, 40), " is not an index or a string");
  // A string of digits is an index (the harness literal_evals it), then a letter (A, B, ...), then
  // the text of a choice.
  auto choices = doc_choices(t, doc);
  const std::string s = g.get<std::string>();
  if (!s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos)
    return std::stoll(s);
  if (s.size() == 1 && s[0] >= 'A' && s[0] < 'A' + int(choices.size())) return s[0] - 'A';
  for (size_t i = 0; i < choices.size(); ++i)
    if (choices[i] == s) return int64_t(i);
  fail(t.name, ": gold '", s, "' is neither an index, a letter nor a choice");
}

std::vector<std::vector<json>> fewshot_examples(const EvalTask& t, const std::vector<json>& docs,
                                                const std::vector<json>& pool, bool same_pool,
                                                PythonRandom& rnd) {
  std::vector<std::vector<json>> out(docs.size());
  if (t.num_fewshot <= 0) return out;
  const size_t k = size_t(t.num_fewshot);
  // One generator for the whole task, advanced item by item (the harness's ContextSampler after
  // set_rnd(fewshot_random_seed)).
  auto pick = [&](const std::vector<size_t>& idx) {
    std::vector<json> v;
    for (size_t i : idx) v.push_back(pool[i]);
    return v;
  };
  for (size_t d = 0; d < docs.size(); ++d) {
    std::vector<json>& shots = out[d];
    if (t.fewshot_sampler == "first_n") {  // FirstNSampler: the pool without the item, first k
      for (size_t i = 0; i < pool.size() && shots.size() < k; ++i)
        if (!same_pool || pool[i] != docs[d]) shots.push_back(pool[i]);
      if (shots.size() < k)
        fail(t.name, ": ", k, " few-shot examples requested, ", shots.size(), " available");
      continue;
    }
    // b281b09 draws k + 1 only from the scored split itself (no training docs).
    const bool extra = t.fewshot_draws_extra && t.harness != "lm-eval b281b09";
    if (!same_pool && !extra) {  // rnd.sample(pool, k)
      if (k > pool.size())
        fail(t.name, ": ", k, " few-shot examples requested, ", pool.size(), " available");
      shots = pick(rnd.sample(pool.size(), k));
      continue;
    }
    // rnd.sample(pool, k + 1), copies of the item removed, first k; if duplicates of the item
    // left fewer than k, sample k again from the pool without any copy of it.
    if (k + 1 > pool.size())
      fail(t.name, ": ", k, " few-shot examples from the scored data need ", k + 1, " items");
    for (auto& x : pick(rnd.sample(pool.size(), k + 1)))
      if (x != docs[d] && shots.size() < k) shots.push_back(x);
    if (shots.size() < k) {
      std::vector<json> rest;
      for (auto& x : pool)
        if (x != docs[d]) rest.push_back(x);
      if (k > rest.size()) fail(t.name, ": too few distinct few-shot examples");
      shots.clear();
      for (size_t i : rnd.sample(rest.size(), k)) shots.push_back(rest[i]);
    }
  }
  return out;
}

std::string fewshot_text(const EvalTask& t, const json& doc) {
  if (t.type == "generate")
    return render_template(t.doc_to_text, doc, t.name) + t.target_delimiter +
           render_template(t.doc_to_target, doc, t.name);
  auto choices = doc_choices(t, doc);
  const int64_t g = doc_gold(t, doc);
  if (t.choice_in_context) {  // the gold option fills the blank; the fixed continuation follows
    json d = doc;
    d["choice"] = choices[size_t(g)];
    return render_template(t.doc_to_text, d, t.name) + t.target_delimiter +
           render_template("{{continuation}}", doc, t.name);
  }
  return render_template(t.doc_to_text, doc, t.name) + t.target_delimiter + choices[size_t(g)];
}

std::string build_context(const EvalTask& t, const std::vector<json>& shots, const json& doc,
                          const std::string& question) {
  std::string ctx = t.description.empty() ? "" : render_template(t.description, doc, t.name);
  for (auto& s : shots) ctx += fewshot_text(t, s) + t.fewshot_delimiter;
  return ctx + question;
}

}  // namespace lamina
