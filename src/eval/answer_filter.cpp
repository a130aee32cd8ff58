#include "eval/answer_filter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <cstring>

#include "core/error.h"
#include "eval/dataset_rows.h"

namespace lamina {

struct PyRegex::Code {
  pcre2_code* re = nullptr;
  uint32_t groups = 0;
  ~Code() { pcre2_code_free(re); }
};

PyRegex::PyRegex(const std::string& pattern, const std::string& where)
    : code_(std::make_shared<Code>()) {
  int err = 0;
  PCRE2_SIZE off = 0;
  // UTF mode: '.' and classes work on code points as Python's str patterns do; a generation that
  // is not valid UTF-8 is still searched (MATCH_INVALID_UTF) instead of refused.
  code_->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                            PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
  if (!code_->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(where, ": regex '", pattern.substr(0, 60), "' at offset ", off, ": ",
         reinterpret_cast<const char*>(msg));
  }
  pcre2_pattern_info(code_->re, PCRE2_INFO_CAPTURECOUNT, &code_->groups);
}

namespace {

// Calls fn(ovector, pairs) for every match, advancing as Python's finditer does: after an empty
// match the next one may not be empty at the same place (else one character on).
template <class Fn>
void for_each_match(pcre2_code* re, const std::string& s, Fn fn) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  PCRE2_SIZE start = 0;
  uint32_t options = 0;
  while (start <= s.size()) {
    const int rc = pcre2_match(re, subject, s.size(), start, options, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      if (options == 0) break;
      // No non-empty match here: step over one UTF-8 character and search normally.
      ++start;
      while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
      options = 0;
      continue;
    }
    if (rc < 0) break;  // a resource limit: treat as no further match
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    fn(ov, rc);
    options = ov[0] == ov[1] ? (PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED) : 0;
    start = ov[1];
  }
  pcre2_match_data_free(md);
}

}  // namespace

std::vector<std::vector<std::string>> PyRegex::findall(const std::string& s) const {
  std::vector<std::vector<std::string>> out;
  const uint32_t g = code_->groups;
  for_each_match(code_->re, s, [&](const PCRE2_SIZE* ov, int rc) {
    std::vector<std::string> m;
    for (uint32_t i = g ? 1 : 0; i <= g; ++i) {
      const bool set = int(i) < rc && ov[2 * i] != PCRE2_UNSET;
      m.push_back(set ? s.substr(ov[2 * i], ov[2 * i + 1] - ov[2 * i]) : std::string());
    }
    out.push_back(m);
  });
  return out;
}

std::string PyRegex::remove_all(const std::string& s) const {
  std::string out;
  size_t kept = 0;
  for_each_match(code_->re, s, [&](const PCRE2_SIZE* ov, int) {
    out += s.substr(kept, ov[0] - kept);
    kept = ov[1];
  });
  return out + s.substr(kept);
}

std::string apply_answer_filter(const AnswerFilter& f, const std::string& response) {
  const PyRegex re(f.regex, "filter " + f.name);
  auto matches = re.findall(response);
  if (matches.empty()) return f.fallback;
  const int64_t n = int64_t(matches.size());
  const int64_t k = f.group_select < 0 ? n + f.group_select : f.group_select;
  if (k < 0 || k >= n) return f.fallback;  // Python would raise IndexError
  const auto& m = matches[size_t(k)];
  std::string pick;
  if (m.size() == 1) {
    pick = m[0];
  } else {  // a tuple of groups: the first non-empty one
    for (auto& x : m)
      if (!x.empty()) {
        pick = x;
        break;
      }
    if (pick.empty()) return f.fallback;
  }
  return python_strip(pick);
}

bool exact_match(const std::string& prediction, const std::string& reference,
                 const ExactMatchRules& rules) {
  std::string p = prediction, r = reference;
  for (auto& pat : rules.regexes_to_ignore) {
    const PyRegex re(pat, "regexes_to_ignore");
    p = re.remove_all(p), r = re.remove_all(r);
  }
  auto fold = [&](std::string s) {
    std::string out;
    for (char c : s) {
      if (rules.ignore_punctuation && std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", c) && c)
        continue;
      out += rules.ignore_case ? char(std::tolower(static_cast<unsigned char>(c))) : c;
    }
    return out;
  };
  return fold(p) == fold(r);
}

}  // namespace lamina
