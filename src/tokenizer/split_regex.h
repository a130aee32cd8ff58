// The regular expressions of tokenizer.json (pre-tokenizer splits, Replace normalizers and
// decoders), which Hugging Face tokenizers runs with Oniguruma, run with PCRE2 in UTF + UCP mode.
// Two differences are removed before compiling: PCRE2's \s also matches U+180E, which is not
// White_Space (Oniguruma's \s), so \s is spelled as the White_Space class; PCRE2's \w is letters,
// numbers and '_', Oniguruma's letters, marks, numbers and connector punctuation.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lamina {

class SplitRegex {
 public:
  // where names the file and field in errors.
  SplitRegex(const std::string& pattern, const std::string& where);
  // A literal string (tokenizer.json's {"String": ...} patterns).
  static SplitRegex literal(const std::string& text, const std::string& where);
  // Every non-overlapping match in s as [begin, end) byte ranges, left to right; an empty match
  // moves the search one character on.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

  struct Code;  // the compiled PCRE2 pattern

 private:
  SplitRegex() = default;
  std::shared_ptr<Code> code_;
};

// The pattern with \s, \S, \w and \W spelled as Oniguruma's classes (outside and inside [...]).
std::string onig_compatible_pattern(const std::string& pattern);

}  // namespace lamina
