// lm-evaluation-harness's scoring of generations: its `regex` filter (RegexFilter: re.findall,
// group_select, fallback, strip) and its exact_match metric (regexes_to_ignore removed with re.sub
// from prediction and reference, then ignore_case / ignore_punctuation), as in lm-eval 0.4.13.
// Patterns are Python `re` syntax; PCRE2 (UTF mode) runs them with the same meaning for the
// constructs tasks use ((?s), lazy and greedy quantifiers, classes, groups, $ before a final \n).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lamina {

class PyRegex {
 public:
  // Compiles or fails naming `where` and PCRE2's message with the offset.
  PyRegex(const std::string& pattern, const std::string& where);
  // re.findall: per match, its groups (one element, the whole match, when the pattern has none);
  // an unset group is "".
  std::vector<std::vector<std::string>> findall(const std::string& s) const;
  // re.sub(pattern, "", s): every match removed.
  std::string remove_all(const std::string& s) const;

 private:
  struct Code;
  std::shared_ptr<Code> code_;
};

struct AnswerFilter {
  std::string name;  // the metric is reported as exact_match,<name>
  std::string regex;
  int64_t group_select = 0;  // index into the matches (Python's: -1 is the last)
  std::string fallback = "[invalid]";
};

// RegexFilter.apply on one response.
std::string apply_answer_filter(const AnswerFilter& f, const std::string& response);

struct ExactMatchRules {
  std::vector<std::string> regexes_to_ignore;
  bool ignore_case = false;         // ASCII letters (numpy's char.lower also maps other scripts)
  bool ignore_punctuation = false;  // Python's string.punctuation
};
bool exact_match(const std::string& prediction, const std::string& reference,
                 const ExactMatchRules& rules);

}  // namespace lamina
