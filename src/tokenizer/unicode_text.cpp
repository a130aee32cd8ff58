#include "tokenizer/unicode_text.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

namespace lamina {

char32_t utf8_decode(std::string_view s, size_t i, size_t* len) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t n = utf8proc_iterate(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i), utf8proc_ssize_t(s.size() - i), &cp);
  if (n <= 0) {
    *len = 1;
    return 0xFFFD;
  }
  *len = size_t(n);
  return char32_t(cp);
}

void utf8_append(std::string& out, char32_t cp) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

std::string unicode_normalize(std::string_view s, NormalForm f) {
  int opts = UTF8PROC_STABLE;
  switch (f) {
    case NormalForm::NFC:
      opts |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::NFD:
      opts |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::NFKC:
      opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalForm::NFKD:
      opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                   &out, utf8proc_option_t(opts));
  if (n < 0) return std::string(s);
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> hold(out, &std::free);
  return std::string(reinterpret_cast<const char*>(out), size_t(n));
}

std::string unicode_lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    const char32_t cp = utf8_decode(s, i, &len);
    // Rust's char::to_lowercase (tokenizers' Lowercase) applies the one unconditional
    // multi-character mapping of SpecialCasing.txt: U+0130 (capital I with dot above) becomes
    // i + U+0307 (combining dot above); utf8proc's simple mapping gives a bare i.
    if (cp == 0x130) {
      out += "i\xCC\x87";
      continue;
    }
    utf8_append(out, char32_t(utf8proc_tolower(utf8proc_int32_t(cp))));
  }
  return out;
}

std::string strip_accents(std::string_view s) {
  const std::string d = unicode_normalize(s, NormalForm::NFD);
  std::string out;
  out.reserve(d.size());
  for (size_t i = 0, len = 0; i < d.size(); i += len) {
    const char32_t cp = utf8_decode(d, i, &len);
    // tokenizers' StripAccents drops is_combining_mark: General_Category Mark, all three of
    // Mn, Mc (the Devanagari vowel signs) and Me.
    const utf8proc_category_t cat = utf8proc_category(utf8proc_int32_t(cp));
    if (cat != UTF8PROC_CATEGORY_MN && cat != UTF8PROC_CATEGORY_MC && cat != UTF8PROC_CATEGORY_ME)
      out.append(d, i, len);
  }
  return out;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_word_char(char32_t c) {
  switch (utf8proc_category(utf8proc_int32_t(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return c == 0x200C || c == 0x200D;  // Join_Control
  }
}

std::string utf8_lossy(std::string_view b) {
  std::string out;
  out.reserve(b.size());
  size_t i = 0;
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(b[k]); };
  while (i < b.size()) {
    const unsigned char c = byte(i);
    // The length a valid sequence starting with c has, and the range its second byte must be in
    // (Unicode's table of well-formed sequences): a maximal invalid prefix is replaced once.
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
      need = 1;
    else if (c >= 0xC2 && c <= 0xDF)
      need = 2;
    else if (c == 0xE0)
      need = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
      need = 3;
    else if (c == 0xED)
      need = 3, hi = 0x9F;
    else if (c == 0xF0)
      need = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
      need = 4;
    else if (c == 0xF4)
      need = 4, hi = 0x8F;
    if (need == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k < need && i + k < b.size(); ++k) {
      const unsigned char d = byte(i + k);
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) break;
    }
    if (k == need) {
      out.append(b.substr(i, need));
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += k;
  }
  return out;
}

}  // namespace lamina
