#include "args.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/parse_number.h"
#include "io/output_dir.h"
#include "io/yaml_file.h"
#include "option_rules.h"

namespace lamina {
namespace fs = std::filesystem;

Args::Args(std::string command, std::string summary, std::vector<ArgSpec> specs)
    : command_(std::move(command)), summary_(std::move(summary)), specs_(std::move(specs)) {
  specs_.push_back({"help", "", "show this help and exit", ""});
}

const ArgSpec& Args::spec(const std::string& name) const {
  for (auto& s : specs_)
    if (s.name == name) return s;
  fail("internal: option --", name, " is not declared for 'lamina ", command_, "'");
}

namespace {
bool g_validate_only = false;
}  // namespace

void Args::set_validate_only(bool on) {
  g_validate_only = on;
}

bool Args::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0)
      fail("unexpected argument '", a, "' (see lamina ", command_, " --help)");
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos)
      value = name.substr(eq + 1), name = name.substr(0, eq), inline_value = true;
    const ArgSpec* s = nullptr;
    for (auto& x : specs_)
      if (x.name == name) s = &x;
    if (!s) fail("unknown option --", name, " (see lamina ", command_, " --help)");
    if (name == "help") {
      print_help();
      return false;
    }
    if (s->metavar.empty()) {
      if (inline_value) fail("--", name, " takes no value");
      value = "1";
    } else if (!inline_value) {
      if (i + 1 >= argc) fail("--", name, " needs a value (", s->metavar, ")");
      value = argv[++i];
    }
    auto& v = values_[name];
    if (!v.empty() && !s->repeat) fail("--", name, " given twice");
    v.push_back(value);
  }
  for (auto& s : specs_)
    if (s.dflt == kRequired && !values_.count(s.name))
      fail("missing required option --", s.name, " (see lamina ", command_, " --help)");
  check_values();
  check_paths();
  return !g_validate_only;
}

namespace {
// Options that name what a command writes; every other DIR/FILE/YAML option is read.
bool is_output_option(const std::string& name) {
  return name == "out" || name == "output" || name == "dump-logits" || name == "log-samples" ||
         name == "cache-dir";
}
bool names_a_path(const ArgSpec& s) {
  return s.metavar == "DIR" || s.metavar == "FILE" || s.metavar == "YAML" || s.metavar == "SVG" ||
         s.metavar == "FILE[:LABEL]";
}
}  // namespace

void Args::check_paths() const {
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
  for (auto& s : specs_) {
    if (!names_a_path(s)) continue;
    std::vector<std::string> vals = all(s.name);
    if (vals.empty() && !s.dflt.empty() && s.dflt != kRequired) vals.push_back(s.dflt);
    for (std::string v : vals) {
      if (is_output_option(s.name)) {
        outputs.push_back({s.name, v});
        continue;
      }
      std::error_code ec;
      if (s.metavar == "FILE[:LABEL]" && !fs::exists(v, ec) && v.rfind(':') != std::string::npos)
        v = v.substr(0, v.rfind(':'));
      // A file read as input must be there, and be a file: checked before any work starts.
      if (s.metavar != "DIR") {
        if (!fs::exists(v, ec)) fail("--", s.name, " ", v, ": not found");
        if (fs::is_directory(v, ec))
          fail("--", s.name, " ", v, ": is a directory, expected a file");
      }
      inputs.push_back({s.name, v});
    }
  }
  for (auto& o : outputs) check_output_outside_inputs(o, inputs);
}

void Args::check_values() const {
  for (auto& s : specs_) {
    if (s.metavar.empty()) continue;
    auto it = values_.find(s.name);
    if (it != values_.end()) {
      for (auto& v : it->second) check_option_value(command_, s.name, v);
    } else if (!s.dflt.empty() && s.dflt != kRequired) {
      check_option_value(command_, s.name, s.dflt);
    }
  }
}

void Args::merge_yaml(const std::string& path) {
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail(path, ": expected a mapping of option: value");
  for (auto it : root) {
    const std::string raw = yaml_as<std::string>(it.first, path, "option name");
    std::string key = raw;
    std::replace(key.begin(), key.end(), '_', '-');
    const ArgSpec* s = nullptr;
    for (auto& x : specs_)
      if (x.name == key && key != "help" && key != "config") s = &x;
    if (!s) fail(yaml_where(it.first, path), ": unknown option '", raw, "' for lamina ", command_);
    if (values_.count(key)) continue;  // given on the command line
    auto& v = values_[key];
    auto scalar = [&](const YAML::Node& n) {
      if (!n.IsScalar()) fail(yaml_where(n, path), ": ", raw, ": expected a value");
      return n.Scalar();
    };
    if (it.second.IsSequence()) {
      if (!s->repeat) fail(yaml_where(it.second, path), ": ", raw, " takes one value, not a list");
      for (const auto& e : it.second) v.push_back(scalar(e));
    } else if (s->metavar.empty()) {
      if (yaml_as<bool>(it.second, path, raw))
        v.push_back("1");
      else
        values_.erase(key);
    } else {
      v.push_back(scalar(it.second));
    }
  }
  try {
    check_values();
    check_paths();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

void Args::print_help() const {
  std::printf("usage: lamina %s [options]\n\n%s\n\noptions:\n", command_.c_str(), summary_.c_str());
  for (auto& s : specs_) {
    std::string left = "--" + s.name + (s.metavar.empty() ? "" : " " + s.metavar);
    std::string d = s.dflt == kRequired ? " (required)"
                    : s.dflt.empty()    ? ""
                                        : " (default: " + s.dflt + ")";
    std::printf("  %-28s %s%s%s\n", left.c_str(), s.help.c_str(), d.c_str(),
                s.repeat ? " [repeatable]" : "");
  }
}

bool Args::given(const std::string& name) const {
  spec(name);
  return values_.count(name) != 0;
}

bool Args::flag(const std::string& name) const {
  return given(name);
}

std::string Args::str(const std::string& name) const {
  auto& s = spec(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second.back();
  return s.dflt == kRequired ? "" : s.dflt;
}

std::vector<std::string> Args::all(const std::string& name) const {
  spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int64_t Args::integer(const std::string& name) const {
  const std::string v = str(name);
  if (auto r = parse_integer(v)) return *r;
  fail("--", name, " expects an integer, got '", v, "'");
}

double Args::number(const std::string& name) const {
  const std::string v = str(name);
  if (auto r = parse_finite(v)) return *r;
  fail("--", name, " expects a finite number, got '", v, "'");
}

}  // namespace lamina
