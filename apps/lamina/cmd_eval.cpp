// lamina eval: tasks with lm-evaluation-harness's scoring rules, perplexity, decoding sweeps;
// lamina eval compare: two results files side by side.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "eval/evaluator.h"
#include "io/fingerprint.h"
#include "io/generation_config.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"

namespace lamina {
using json = nlohmann::json;

namespace {

int eval_compare(int argc, char** argv) {
  Args a("eval compare",
         "Print two results files (lamina eval --output) side by side with differences.",
         {{"a", "FILE", "first results JSON", kRequired},
          {"b", "FILE", "second results JSON", kRequired}});
  if (!a.parse(argc, argv)) return 0;
  auto load = [](const std::string& p) { return read_json_file(p); };
  json A = load(a.str("a")), B = load(a.str("b"));
  std::printf("| task | setting | metric | %s | %s | difference |\n|---|---|---|---|---|---|\n",
              a.str("a").c_str(), a.str("b").c_str());
  for (auto& [task, settings] : A["results"].items())
    for (auto& [setting, r] : settings.items())
      for (auto& [metric, v] : r["metrics"].items()) {
        const json* bv = nullptr;
        if (B["results"].contains(task) && B["results"][task].contains(setting) &&
            B["results"][task][setting]["metrics"].contains(metric))
          bv = &B["results"][task][setting]["metrics"][metric];
        if (bv)
          std::printf("| %s | %s | %s | %.4f | %.4f | %+.4f |\n", task.c_str(), setting.c_str(),
                      metric.c_str(), v.get<double>(), bv->get<double>(),
                      bv->get<double>() - v.get<double>());
        else
          std::printf("| %s | %s | %s | %.4f | - | - |\n", task.c_str(), setting.c_str(),
                      metric.c_str(), v.get<double>());
      }
  return 0;
}

// "--sweep temperature=0,0.7" x "--sweep top_p=0.9,1" -> every combination.
std::vector<std::pair<std::string, SamplingParams>> sweep_settings(
    const std::vector<std::string>& specs, const SamplingParams& base) {
  std::vector<std::pair<std::string, SamplingParams>> out = {{"default", base}};
  for (auto& spec : specs) {
    auto eq = spec.find('=');
    if (eq == std::string::npos) fail("--sweep ", spec, ": expected KEY=V1,V2");
    const std::string key = spec.substr(0, eq);
    std::vector<std::string> vals;
    std::stringstream ss(spec.substr(eq + 1));
    for (std::string v; std::getline(ss, v, ',');) vals.push_back(v);
    std::vector<std::pair<std::string, SamplingParams>> next;
    for (auto& [label, sp] : out)
      for (auto& v : vals) {
        SamplingParams p = sp;
        double x;
        try {
          x = std::stod(v);
        } catch (...) {
          fail("--sweep ", spec, ": '", v, "' is not a number");
        }
        if (key == "temperature")
          p.temperature = float(x);
        else if (key == "top_p")
          p.top_p = float(x);
        else if (key == "top_k")
          p.top_k = int64_t(x);
        else if (key == "repetition_penalty")
          p.repetition_penalty = float(x);
        else
          fail("--sweep: unknown key '", key, "' (temperature, top_p, top_k, repetition_penalty)");
        next.push_back({(label == "default" ? "" : label + " ") + key + "=" + v, p});
      }
    out = next;
  }
  return out;
}

// "--template qa=Q: {{question}}\nA:" -> (qa, "Q: {{question}}\nA:" with a real newline).
std::vector<std::pair<std::string, std::string>> template_variants(
    const std::vector<std::string>& specs) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& spec : specs) {
    auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) fail("--template ", spec, ": expected NAME=TEXT");
    std::string text;
    for (size_t i = eq + 1; i < spec.size(); ++i) {
      if (spec[i] == '\\' && i + 1 < spec.size() && spec[i + 1] == 'n')
        text += '\n', ++i;
      else
        text += spec[i];
    }
    for (auto& [name, _] : out)
      if (name == spec.substr(0, eq)) fail("--template ", name, ": given twice");
    out.push_back({spec.substr(0, eq), text});
  }
  return out;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  if (argc >= 1 && !std::strcmp(argv[0], "compare")) {
    // Positional form: lamina eval compare A.json B.json
    if (argc == 3 && argv[1][0] != '-' && argv[2][0] != '-') {
      std::string fa = "--a", fb = "--b";
      char* args[] = {fa.data(), argv[1], fb.data(), argv[2]};
      return eval_compare(4, args);
    }
    return eval_compare(argc - 1, argv + 1);
  }
  Args a(
      "eval",
      "Evaluate a model on task definitions (YAML; tasks/ ships the Open LLM Leaderboard v1 "
      "formats) with\n"
      "lm-evaluation-harness's scoring, or the perplexity of a text file. Writes a results JSON "
      "and prints a\n"
      "Markdown table; `lamina eval compare A.json B.json` compares two runs.",
      join_specs(
          model_arg_specs(),
          std::vector<ArgSpec>{
              {"task", "YAML", "task definition", "", true},
              {"data", "FILE", "override the task's data file (one --task)", ""},
              {"fewshot-data", "FILE",
               "override the task's few-shot examples file (lm-eval's few-shot split, e.g. train "
               "or dev; one --task)",
               ""},
              {"bos", "auto|always|never",
               "BOS before each request (auto: the task's rule; its auto is lm-eval 0.4.13's, the "
               "tokenizer's add_bos_token)",
               "auto"},
              {"limit", "N", "first N items of each task", "0"},
              {"batch-tokens", "N",
               "multiple choice: pack requests into rows of N tokens (0: one at a time)", "1024"},
              {"num-fewshot", "K", "override the few-shot count", ""},
              {"max-new-tokens", "N", "generation tasks: override the task's token budget", ""},
              {"perplexity", "FILE", "perplexity and bits per byte of a text file", ""},
              {"window", "N", "perplexity: tokens of context per window", "2048"},
              {"stride", "N", "perplexity: window step (default: the window)", "0"},
              {"sweep", "KEY=V1,V2",
               "generation settings to compare (temperature, top_p, top_k, repetition_penalty)", "",
               true},
              {"template", "NAME=TEXT",
               "prompt variant: TEXT replaces the task's doc_to_text ({{field}}, \\n = newline), "
               "run beside the task's own as setting template=NAME",
               "", true},
              {"temperature", "T", "generation temperature (0: greedy)", "0"},
              {"seed", "S", "sampling seed", "0"},
              {"chat-template", "NAME",
               "chat tasks: a built-in template (llama-2, mistral-instruct, openchat, chatml) "
               "instead of the model's own chat_template",
               ""},
              {"condition", "TEXT",
               "chat tasks, OpenChat: class condition (default: generation_config's "
               "chat_condition, else GPT4 Correct)",
               ""},
              {"output", "FILE", "results JSON", ""},
              {"log-samples", "FILE", "every item's prompt, scores and prediction (JSONL)", ""}}));
  if (!a.parse(argc, argv)) return 0;
  LoadedModel lm = load_model(a);
  json results = {{"lamina_version", LAMINA_VERSION},
                  {"model", a.str("model")},
                  {"model_hash", model_fingerprint(a.str("model"))},
                  {"results", json::object()}};
  if (a.given("perplexity")) {
    const std::string text = read_text_file(a.str("perplexity"));
    auto r = perplexity(*lm.model, lm.tokenizer, text, a.integer("window"), a.integer("stride"));
    std::printf("perplexity: %.4f\nbits per byte: %.4f\ntokens: %lld, bytes: %lld\n", r.perplexity,
                r.bits_per_byte, (long long)r.tokens, (long long)r.bytes);
    results["results"]["perplexity"]["default"] = {
        {"metrics", {{"perplexity", r.perplexity}, {"bits_per_byte", r.bits_per_byte}}},
        {"n", r.tokens},
        {"file", a.str("perplexity")}};
  }
  if (a.all("task").empty() && !a.given("perplexity"))
    fail("give --task YAML (repeatable) or --perplexity FILE");
  SamplingParams base;
  base.temperature = float(a.number("temperature"));
  base.seed = uint64_t(a.integer("seed"));
  auto settings = sweep_settings(a.all("sweep"), base);
  // The task's own prompt ("") first, then each --template variant.
  auto variants = template_variants(a.all("template"));
  variants.insert(variants.begin(), {"", ""});
  std::ofstream samples_out;
  if (a.given("log-samples")) samples_out.open(a.str("log-samples"));
  std::string table =
      "| task | setting | metric | value | stderr | n |\n|---|---|---|---|---|---|\n";
  // Replies end where `generate` ends them (generation_config's EOS ids, e.g. <|end_of_turn|>).
  const GenerationConfig gen = read_generation_config(a.str("model"));
  const std::optional<ChatFormat> chat = choose_chat_format(
      lm.tokenizer, a.given("tokenizer") ? a.str("tokenizer") : a.str("model"),
      a.given("chat-template") ? std::optional(parse_chat_template(a.str("chat-template")))
                               : std::nullopt,
      a.given("condition") ? std::optional(a.str("condition")) : std::nullopt);
  for (auto& path : a.all("task"))
    for (auto& [vname, vtext] : variants) {
      EvalTask t = load_task(path);
      if (a.given("data")) t.data = a.str("data");
      if (a.given("fewshot-data")) t.fewshot_data = a.str("fewshot-data");
      if (a.given("num-fewshot")) t.num_fewshot = a.integer("num-fewshot");
      if (a.given("max-new-tokens")) t.max_new_tokens = a.integer("max-new-tokens");
      if (!vname.empty()) t.doc_to_text = vtext;
      // Decoding settings only matter to generation tasks.
      auto runs = t.type == "generate" ? settings : decltype(settings){{"default", base}};
      for (auto [label, sp] : runs) {
        if (!vname.empty()) label = "template=" + vname + (label == "default" ? "" : " " + label);
        EvalSettings s;
        s.sampling = sp, s.limit = a.integer("limit"), s.label = label;
        s.batch_tokens = a.integer("batch-tokens");
        s.bos = a.str("bos");
        s.stop_ids = gen.eos_token_ids;
        s.chat = chat;
        TaskResult r = evaluate_task(*lm.model, lm.tokenizer, t, s);
        json m = json::object(), se = json::object();
        for (auto& [k, v] : r.value) {
          m[k] = v;
          se[k] = r.stderr_[k];
          char row[256];
          std::snprintf(row, sizeof row, "| %s | %s | %s | %.4f | %.4f | %lld |\n", t.name.c_str(),
                        label.c_str(), k.c_str(), v, r.stderr_[k], (long long)r.n);
          table += row;
        }
        results["results"][t.name][label] = {{"metrics", m},
                                             {"stderr", se},
                                             {"n", r.n},
                                             {"settings",
                                              {{"temperature", sp.temperature},
                                               {"top_p", sp.top_p},
                                               {"top_k", sp.top_k},
                                               {"num_fewshot", t.num_fewshot},
                                               {"fewshot_sampler", t.fewshot_sampler},
                                               {"fewshot_seed", t.fewshot_seed},
                                               {"bos", eval_adds_bos(t, s, lm.tokenizer)},
                                               {"harness", t.harness},
                                               {"doc_to_text", t.doc_to_text}}}};
        if (samples_out)
          for (auto& smp : r.samples) {
            json x = smp;
            x["task"] = t.name;
            x["setting"] = label;
            samples_out << x.dump() << "\n";
          }
      }
    }
  if (!a.all("task").empty()) std::printf("%s", table.c_str());
  if (a.given("output")) write_file_atomic(a.str("output"), results.dump(2) + "\n");
  return 0;
}

}  // namespace lamina
