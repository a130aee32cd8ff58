// lamina recipe: a whole recipe (SOLAR: up-scale, continue pretraining, SFT, DPO, evaluate,
// export) from one YAML file, each step one lamina command whose --model is the previous step's
// output. Every step's options are checked before the first runs; finished steps are recorded and
// skipped when the recipe is run again, and an interrupted training step resumes.
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/file_lock.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "io/yaml_file.h"
#include "train/pretrain.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace lamina {

namespace {

// What a step's command consumes and produces.
enum class Kind { Produces, Trains, MergesLora, Evaluates, Exports, Uses };
Kind kind_of(const std::string& cmd) {
  if (cmd == "upscale") return Kind::Produces;
  if (cmd == "pretrain" || cmd == "sft" || cmd == "dpo") return Kind::Trains;
  if (cmd == "merge-lora") return Kind::MergesLora;
  if (cmd == "eval") return Kind::Evaluates;
  if (cmd == "export-gguf") return Kind::Exports;
  if (cmd == "score" || cmd == "generate" || cmd == "info") return Kind::Uses;
  fail("unknown step '", cmd,
       "' (upscale, pretrain, sft, dpo, merge-lora, eval, export-gguf, score, generate, info)");
}

struct Step {
  int index = 0;
  std::string cmd, name;             // name: "03-sft"
  std::vector<std::string> options;  // from the YAML, as --key value words
  std::map<std::string, bool> given;
};

// One YAML value -> command-line words for --key (lists repeat the option; true is a flag).
void add_option(Step& s, std::string key, const YAML::Node& v, const std::string& where) {
  std::replace(key.begin(), key.end(), '_', '-');
  s.given[key] = true;
  auto scalar = [&](const YAML::Node& x) {
    if (!x.IsScalar()) fail(where, ": option '", key, "' must be a value or a list of values");
    return x.as<std::string>();
  };
  if (v.IsSequence()) {
    for (const auto& x : v) s.options.insert(s.options.end(), {"--" + key, scalar(x)});
  } else if (v.IsScalar() && (v.as<std::string>() == "true" || v.as<std::string>() == "false")) {
    if (v.as<bool>()) s.options.push_back("--" + key);
  } else {
    s.options.insert(s.options.end(), {"--" + key, scalar(v)});
  }
}

std::vector<Step> read_steps(const YAML::Node& root, const std::string& path) {
  YAML::Node list;
  for (auto it : root)
    if (it.first.as<std::string>() == "steps") list = it.second;
  if (!list || !list.IsSequence() || list.size() == 0)
    fail(path, ": 'steps' must be a non-empty list");
  std::vector<Step> steps;
  size_t i = 0;
  for (auto n : list) {
    const std::string where = path + ": step " + std::to_string(i + 1);
    if (!n.IsMap() || n.size() != 1) fail(where, ": expected '- COMMAND: {options}'");
    Step s;
    s.index = int(i + 1);
    const auto entry = n.begin();
    s.cmd = entry->first.as<std::string>();
    try {
      kind_of(s.cmd);  // validates the name
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
    char nm[16];
    std::snprintf(nm, sizeof nm, "%02d-", s.index);
    s.name = nm + s.cmd;
    const YAML::Node opts = entry->second;
    if (opts && !opts.IsNull()) {
      if (!opts.IsMap()) fail(where, " (", s.cmd, "): options must be a mapping");
      for (auto it : opts) add_option(s, it.first.as<std::string>(), it.second, where);
    }
    steps.push_back(std::move(s));
    ++i;
  }
  return steps;
}

// The value a step gives an option (the last one), or "".
std::string given_value(const Step& s, const std::string& key) {
  std::string v;
  for (size_t i = 0; i + 1 < s.options.size(); ++i)
    if (s.options[i] == "--" + key) v = s.options[i + 1];
  return v;
}

// Where a step writes: its own --out when given, else OUT/NN-COMMAND.
std::string step_dir(const Step& s, const std::string& out) {
  const std::string v = given_value(s, "out");
  return v.empty() ? out + "/" + s.name : v;
}

// The words of one step's command line, with --model / --out filled in from the chain.
std::vector<std::string> command_line(const Step& s, const std::string& out,
                                      const std::string& model, const std::string& lora_base,
                                      bool resume) {
  std::vector<std::string> w = s.options;
  auto put = [&](const std::string& key, const std::string& value) {
    if (!s.given.count(key)) w.insert(w.end(), {"--" + key, value});
  };
  const std::string dir = out + "/" + s.name;
  switch (kind_of(s.cmd)) {
    case Kind::Produces:
      if (!s.given.count("config")) put("model", model);
      put("out", dir);
      if (!s.given.count("force")) w.push_back("--force");  // a rerun replaces an unfinished one
      break;
    case Kind::Trains:
      put("model", model);
      put("out", dir);
      if (resume && !s.given.count("resume")) w.push_back("--resume");
      break;
    case Kind::MergesLora:
      put("model", lora_base);
      put("adapter", model);
      put("out", dir);
      if (!s.given.count("force")) w.push_back("--force");
      break;
    case Kind::Evaluates:
      put("model", model);
      put("output", dir + ".json");
      break;
    case Kind::Exports:
      put("model", model);
      put("out", dir + ".gguf");
      if (!s.given.count("force")) w.push_back("--force");
      break;
    case Kind::Uses:
      put("model", model);
      break;
  }
  return w;
}

int run_words(const std::string& cmd, const std::vector<std::string>& words) {
  std::vector<std::string> copy = words;
  std::vector<char*> argv;
  for (auto& x : copy) argv.push_back(x.data());
  return run_command(cmd, int(argv.size()), argv.data());
}

std::string quoted(const std::vector<std::string>& w) {
  std::string s;
  for (auto& x : w) s += " " + (x.find_first_of(" '\"") == std::string::npos ? x : "'" + x + "'");
  return s;
}

}  // namespace

int cmd_recipe(int argc, char** argv) {
  Args a(
      "recipe",
      "Run a recipe: a YAML file with the starting `model`, an `out` directory and a list of\n"
      "`steps`, each `- COMMAND: {option: value, ...}` with the command's own long options\n"
      "(lists repeat an option, true is a flag). --model / --out are chained: a step's model is\n"
      "the previous step's output (a training run's newest checkpoint; merge-lora merges the\n"
      "adapter of the step before into the model that step started from). Every step's options\n"
      "are checked first; finished steps are recorded in OUT/NN-COMMAND.done and skipped on a\n"
      "rerun, and an interrupted training step resumes from its newest checkpoint.",
      {{"recipe", "YAML", "the recipe file", kRequired},
       {"model", "DIR", "starting model (overrides the recipe's `model`)", ""},
       {"out", "DIR", "output directory (overrides the recipe's `out`)", ""},
       {"dry-run", "", "check the steps and print their command lines; run nothing", ""},
       {"force", "", "run every step again, even those recorded as finished", ""}});
  if (!a.parse(argc, argv)) return 0;
  const std::string path = a.str("recipe");
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail(path, ": expected a mapping with model, out and steps");
  for (auto it : root) {
    const std::string k = it.first.as<std::string>();
    if (k != "model" && k != "out" && k != "steps" && k != "name" && k != "description")
      fail(path, ": unknown key '", k, "' (model, out, steps, name, description)");
  }
  // Named nodes: yaml-cpp's operator[] on temporaries trips GCC's dangling-pointer warning.
  std::string model, out;
  for (auto it : root) {
    const std::string k = it.first.as<std::string>();
    if (k == "model") model = it.second.as<std::string>();
    if (k == "out") out = it.second.as<std::string>();
  }
  if (a.given("model")) model = a.str("model");
  if (a.given("out")) out = a.str("out");
  if (model.empty()) fail(path, ": no starting 'model' (or pass --model)");
  if (out.empty()) fail(path, ": no 'out' directory (or pass --out)");
  std::vector<Step> steps = read_steps(root, path);

  // Check every step's options with its own parser before anything runs (the chained --model is a
  // placeholder here: each command checks its files when it runs).
  Args::set_validate_only(true);
  try {
    for (auto& s : steps) {
      try {
        run_words(s.cmd, command_line(s, out, model, model, false));
      } catch (const Error& e) {
        fail(path, ": step ", s.index, " (", s.cmd, "): ", e.what());
      }
    }
  } catch (...) {
    Args::set_validate_only(false);
    throw;
  }
  Args::set_validate_only(false);

  std::unique_ptr<RunDirLock> lock;  // the whole recipe's directory, while its steps run
  if (!a.flag("dry-run")) lock = std::make_unique<RunDirLock>(out);
  std::string lora_base = model;
  json summary = json::array();
  for (auto& s : steps) {
    const std::string done = out + "/" + s.name + ".done", dir = step_dir(s, out);
    if (!a.flag("force") && !a.flag("dry-run") && file_exists(done)) {
      json d = json::parse(read_text_file(done), nullptr, false);
      if (d.is_object() && d.contains("model_after")) {
        std::printf("== step %d/%zu: %s — done earlier, skipped\n", s.index, steps.size(),
                    s.name.c_str());
        if (kind_of(s.cmd) == Kind::Trains) lora_base = model;
        model = d["model_after"].get<std::string>();
        summary.push_back(d);
        continue;
      }
    }
    const bool resume = kind_of(s.cmd) == Kind::Trains && !latest_checkpoint(dir).empty();
    std::vector<std::string> words = command_line(s, out, model, lora_base, resume);
    std::printf("\n== step %d/%zu: lamina %s%s\n", s.index, steps.size(), s.cmd.c_str(),
                quoted(words).c_str());
    std::fflush(stdout);
    if (a.flag("dry-run")) {  // what the next step would get
      if (kind_of(s.cmd) == Kind::Produces || kind_of(s.cmd) == Kind::MergesLora) model = dir;
      if (kind_of(s.cmd) == Kind::Trains) lora_base = model, model = dir + "/checkpoint-NEWEST";
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      if (int rc = run_words(s.cmd, words); rc != 0)
        fail("step ", s.index, " (", s.cmd, ") exited with status ", rc);
    } catch (const Error& e) {
      fail("step ", s.index, " (", s.cmd, "): ", e.what(), " — fix it and run the recipe again ",
           "to continue from this step");
    }
    std::string after = model;
    switch (kind_of(s.cmd)) {
      case Kind::Produces:
      case Kind::MergesLora:
        after = dir;
        break;
      case Kind::Trains:
        lora_base = model;
        after = latest_checkpoint(dir);
        if (after.empty()) fail("step ", s.index, " (", s.cmd, ") wrote no checkpoint under ", dir);
        break;
      default:
        break;
    }
    json d = {
        {"step", s.index},
        {"command", "lamina " + s.cmd + quoted(words)},
        {"model_before", model},
        {"model_after", after},
        {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    if (kind_of(s.cmd) == Kind::Evaluates)
      d["results"] =
          s.given.count("output") ? given_value(s, "output") : out + "/" + s.name + ".json";
    if (kind_of(s.cmd) == Kind::Exports)
      d["file"] = s.given.count("out") ? given_value(s, "out") : out + "/" + s.name + ".gguf";
    write_file_atomic(done, d.dump(2) + "\n");
    summary.push_back(d);
    model = after;
  }
  if (a.flag("dry-run")) return 0;
  std::printf("\n== recipe done: %s\n| step | command | output | time |\n|---|---|---|---|\n",
              path.c_str());
  for (auto& d : summary) {
    std::string output = d.value("results", d.value("file", d["model_after"].get<std::string>()));
    std::printf("| %d | %s | %s | %s |\n", d["step"].get<int>(),
                d["command"].get<std::string>().substr(0, 60).c_str(), output.c_str(),
                format_duration(d["seconds"].get<double>()).c_str());
  }
  std::printf("final model: %s\n", model.c_str());
  return 0;
}

}  // namespace lamina
