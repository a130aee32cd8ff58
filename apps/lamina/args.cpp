#include "args.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "io/yaml_file.h"

namespace lamina {

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
  return !g_validate_only;
}

void Args::merge_yaml(const std::string& path) {
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail(path, ": expected a mapping of option: value");
  for (auto it : root) {
    std::string key = it.first.as<std::string>();
    std::replace(key.begin(), key.end(), '_', '-');
    const ArgSpec* s = nullptr;
    for (auto& x : specs_)
      if (x.name == key && key != "help" && key != "config") s = &x;
    if (!s) fail(path, ": unknown option '", it.first.as<std::string>(), "' for lamina ", command_);
    if (values_.count(key)) continue;  // given on the command line
    auto& v = values_[key];
    if (it.second.IsSequence()) {
      if (!s->repeat) fail(path, ": option '", key, "' takes one value");
      for (const auto& e : it.second) v.push_back(e.as<std::string>());
    } else if (s->metavar.empty()) {
      if (it.second.as<bool>())
        v.push_back("1");
      else
        values_.erase(key);
    } else {
      v.push_back(it.second.as<std::string>());
    }
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
  std::string v = str(name);
  try {
    size_t pos;
    int64_t r = std::stoll(v, &pos);
    if (pos == v.size()) return r;
  } catch (...) {
  }
  fail("--", name, " expects an integer, got '", v, "'");
}

double Args::number(const std::string& name) const {
  std::string v = str(name);
  try {
    size_t pos;
    double r = std::stod(v, &pos);
    if (pos == v.size()) return r;
  } catch (...) {
  }
  fail("--", name, " expects a number, got '", v, "'");
}

}  // namespace lamina
