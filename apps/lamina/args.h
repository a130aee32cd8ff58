// Command-line options declared once: the same list parses argv and prints --help.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace lamina {

struct ArgSpec {
  std::string name;     // without the leading "--"
  std::string metavar;  // empty: a flag without a value
  std::string help;
  std::string dflt;     // kRequired: must be given
  bool repeat = false;  // may be given several times
};
inline const std::string kRequired = "\x01required";

class Args {
 public:
  Args(std::string command, std::string summary, std::vector<ArgSpec> specs);
  // Parses argv[0..argc) (the words after the command). Returns false when --help was printed,
  // or when only validating (set_validate_only): the command then returns without doing anything.
  bool parse(int argc, char** argv);
  // While set, parse() checks the options (names, values present, required ones) and returns false:
  // `lamina recipe` checks every step's options before the first step runs.
  static void set_validate_only(bool on);
  void print_help() const;
  // Options from a YAML mapping (keys as the long options, '_' or '-'); the command line wins.
  void merge_yaml(const std::string& path);

  bool given(const std::string& name) const;  // on the command line (not just defaulted)
  bool flag(const std::string& name) const;
  std::string str(const std::string& name) const;
  std::vector<std::string> all(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;

 private:
  const ArgSpec& spec(const std::string& name) const;
  // Every value (given or default) against its declared kind and range (option_rules.h).
  void check_values() const;
  // Input files exist and are files; no output is, contains or lies inside an input.
  void check_paths() const;
  std::string command_, summary_;
  std::vector<ArgSpec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace lamina
