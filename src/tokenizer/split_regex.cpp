#include "tokenizer/split_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace lamina {

struct SplitRegex::Code {
  pcre2_code* re = nullptr;
  ~Code() { pcre2_code_free(re); }
};

namespace {

// Unicode White_Space, as the inside of a character class.
constexpr const char* kWhiteSpace =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::shared_ptr<SplitRegex::Code> compile(const std::string& pattern, uint32_t options,
                                          const std::string& where) {
  auto code = std::make_shared<SplitRegex::Code>();
  int err = 0;
  PCRE2_SIZE off = 0;
  // UCP: \w, \d, \s by Unicode properties (PCRE2_LITERAL admits no UCP: nothing to classify).
  const uint32_t ucp = (options & PCRE2_LITERAL) ? 0 : PCRE2_UCP;
  code->re =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | ucp | PCRE2_MATCH_INVALID_UTF | options, &err, &off, nullptr);
  if (!code->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(where, ": regex '", pattern.substr(0, 80), "' at offset ", off, ": ",
         reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code->re, PCRE2_JIT_COMPLETE);  // optional: interpreted if JIT is absent
  return code;
}

}  // namespace

std::string onig_compatible_pattern(const std::string& p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (n == 'w' || (n == 'W' && !in_class)) {  // Oniguruma's \w: L, M, N, Pc (PCRE2's: L, N, _)
        const std::string w = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
        out += in_class ? w : (n == 'w' ? "[" : "[^") + w + "]";
      } else if (n == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (n == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

SplitRegex::SplitRegex(const std::string& pattern, const std::string& where)
    : code_(compile(onig_compatible_pattern(pattern), 0, where)) {}

SplitRegex SplitRegex::literal(const std::string& text, const std::string& where) {
  SplitRegex r;
  r.code_ = compile(text, PCRE2_LITERAL, where);
  return r;
}

std::vector<std::pair<size_t, size_t>> SplitRegex::find_all(std::string_view s) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->re, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t start = 0;
  while (start <= s.size()) {
    const int rc = pcre2_match(code_->re, subject, s.size(), start, 0, md, nullptr);
    if (rc < 0) break;  // no match (or a resource limit): nothing further
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] > ov[0]) {
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
      continue;
    }
    // An empty match is not a split; search again one character on.
    start = ov[0] + 1;
    while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace lamina
