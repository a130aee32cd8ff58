// The Unicode operations tokenizer.json pipelines need, on UTF-8 strings: code point iteration,
// normalization forms (utf8proc), lowercasing, the White_Space and word-character classes Hugging
// Face tokenizers' Rust regexes use (added tokens' lstrip / rstrip / single_word), and Rust's
// String::from_utf8_lossy (byte-level decoding of a token sequence that splits a character).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace lamina {

// The code point starting at s[i] and its length in bytes (a malformed byte: U+FFFD, length 1).
char32_t utf8_decode(std::string_view s, size_t i, size_t* len);
void utf8_append(std::string& out, char32_t cp);
// The length of the UTF-8 sequence a lead byte starts (1 for ASCII and stray bytes), not checked:
// how tokenizers and Python split text into characters before any validation.
inline size_t utf8_char_length(unsigned char lead) {
  return lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
}

enum class NormalForm { NFC, NFD, NFKC, NFKD };
// s in the given normalization form (s must be valid UTF-8; invalid input is returned unchanged).
std::string unicode_normalize(std::string_view s, NormalForm f);
// Unicode simple lowercase mapping of every code point (Rust's str::to_lowercase for the cases
// tokenizer files meet).
std::string unicode_lowercase(std::string_view s);
// NFD, then without the combining marks (category Mn): tokenizers' StripAccents.
std::string strip_accents(std::string_view s);

// Unicode's White_Space property (Rust regex \s).
bool is_white_space(char32_t cp);
// Rust regex \w: letters, marks, decimal digits, connector punctuation.
bool is_word_char(char32_t cp);

// Bytes as UTF-8, each maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

}  // namespace lamina
