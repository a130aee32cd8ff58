#include "tokenizer/hf_pipeline.h"

#include <array>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/split_regex.h"
#include "tokenizer/unicode_text.h"

namespace lamina {
using json = nlohmann::json;

namespace {

std::string type_of(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail(where, ": expected an object with a string \"type\"");
  return j["type"].get<std::string>();
}

std::string str_field(const json& j, const char* key, const std::string& where,
                      std::optional<std::string> dflt = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (dflt) return *dflt;
    fail(where, ": missing string field \"", key, "\"");
  }
  if (!it->is_string()) fail(where, ".", key, " must be a string");
  return it->get<std::string>();
}

bool bool_field(const json& j, const char* key, bool dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail(where, ".", key, " must be true or false");
  return it->get<bool>();
}

// {"String": s} or {"Regex": r}.
SplitRegex pattern_field(const json& j, const std::string& where) {
  auto it = j.find("pattern");
  if (it == j.end() || !it->is_object())
    fail(where, ".pattern must be {\"String\"|\"Regex\": ...}");
  if (it->contains("String") && (*it)["String"].is_string())
    return SplitRegex::literal((*it)["String"].get<std::string>(), where + ".pattern");
  if (it->contains("Regex") && (*it)["Regex"].is_string())
    return SplitRegex((*it)["Regex"].get<std::string>(), where + ".pattern");
  fail(where, ".pattern must be {\"String\"|\"Regex\": ...}");
}

// Every occurrence of the regex in s replaced by content.
std::string replace_all(const SplitRegex& re, const std::string& s, const std::string& content) {
  std::string out;
  size_t at = 0;
  for (auto [b, e] : re.find_all(s)) {
    out.append(s, at, b - at);
    out += content;
    at = e;
  }
  out.append(s, at, std::string::npos);
  return out;
}

// The single-code-point string field (Metaspace's replacement, Strip's content).
std::string char_field(const json& j, const char* key, const std::string& where) {
  std::string s = str_field(j, key, where);
  size_t len = 0;
  if (s.empty() || (utf8_decode(s, 0, &len), len != s.size()))
    fail(where, ".", key, " must be one character");
  return s;
}

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior behavior_field(const json& j, const std::string& where) {
  const std::string b = str_field(j, "behavior", where);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail(where, ".behavior '", b, "' is not one of Removed, Isolated, MergedWithPrevious, ",
       "MergedWithNext, Contiguous");
}

// tokenizers' NormalizedString::split: the matches (is_match ranges, inverted when asked) and the
// text between them, combined as the behavior says; empty pieces dropped.
void split_piece(const TextPiece& p, const std::vector<std::pair<size_t, size_t>>& found,
                 Behavior how, bool invert, std::vector<TextPiece>& out) {
  struct Part {
    size_t b, e;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [b, e] : found) {
    if (b > prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev < p.text.size()) parts.push_back({prev, p.text.size(), false});
  if (invert)
    for (auto& x : parts) x.match = !x.match;
  std::vector<std::pair<size_t, size_t>> ranges;
  bool previous = false;
  switch (how) {
    case Behavior::Removed:
      for (auto& x : parts)
        if (!x.match) ranges.push_back({x.b, x.e});
      break;
    case Behavior::Isolated:
      for (auto& x : parts) ranges.push_back({x.b, x.e});
      break;
    case Behavior::MergedWithPrevious:
      for (auto& x : parts) {
        if (x.match && !previous && !ranges.empty())
          ranges.back().second = x.e;
        else
          ranges.push_back({x.b, x.e});
        previous = x.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (size_t k = parts.size(); k-- > 0;) {
        const Part& x = parts[k];
        if (x.match && !previous && !ranges.empty())
          ranges.back().first = x.b;
        else
          ranges.push_back({x.b, x.e});
        previous = x.match;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    case Behavior::Contiguous:
      for (size_t k = 0; k < parts.size(); ++k) {
        if (k > 0 && parts[k].match == previous)
          ranges.back().second = parts[k].e;
        else
          ranges.push_back({parts[k].b, parts[k].e});
        previous = parts[k].match;
      }
      break;
  }
  for (auto [b, e] : ranges)
    if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 for
// U+0100.. in order.
const std::array<std::string, 256>& byte_chars() {
  static const std::array<std::string, 256> t = [] {
    std::array<std::string, 256> m;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      utf8_append(m[size_t(b)], printable ? char32_t(b) : char32_t(256 + n++));
    }
    return m;
  }();
  return t;
}

const SplitRegex& gpt2_regex() {
  static const SplitRegex re(
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "ByteLevel");
  return re;
}

enum class Prepend { Always, First, Never };

Prepend prepend_field(const json& j, const std::string& where) {
  Prepend p = Prepend::Always;
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    const std::string s = str_field(j, "prepend_scheme", where);
    if (s == "always")
      p = Prepend::Always;
    else if (s == "first")
      p = Prepend::First;
    else if (s == "never")
      p = Prepend::Never;
    else
      fail(where, ".prepend_scheme '", s, "' is not always, first or never");
  }
  if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean() &&
      !j["add_prefix_space"].get<bool>())
    p = Prepend::Never;  // the older field
  return p;
}

}  // namespace

// ---- normalizer ----

struct HfNormalizer::Step {
  enum Kind { Nfc, Nfd, Nfkc, Nfkd, Lower, Replace, PrependText, Strip, StripAccents, ByteLevel };
  Kind kind;
  std::optional<SplitRegex> re;
  std::string text;
  bool left = false, right = false;
};

HfNormalizer HfNormalizer::from_json(const json& j, const std::string& where) {
  HfNormalizer n;
  if (j.is_null()) return n;
  const std::string t = type_of(j, where);
  auto add = [&](Step s) { n.steps_.push_back(std::make_shared<const Step>(std::move(s))); };
  if (t == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      fail(where, ".normalizers must be an array");
    for (size_t i = 0; i < j["normalizers"].size(); ++i) {
      HfNormalizer inner =
          from_json(j["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]");
      n.steps_.insert(n.steps_.end(), inner.steps_.begin(), inner.steps_.end());
    }
  } else if (t == "NFC")
    add({Step::Nfc});
  else if (t == "NFD")
    add({Step::Nfd});
  else if (t == "NFKC")
    add({Step::Nfkc});
  else if (t == "NFKD")
    add({Step::Nfkd});
  else if (t == "Lowercase")
    add({Step::Lower});
  else if (t == "StripAccents")
    add({Step::StripAccents});
  else if (t == "ByteLevel")
    add({Step::ByteLevel});
  else if (t == "Replace")
    add({Step::Replace, pattern_field(j, where), str_field(j, "content", where)});
  else if (t == "Prepend")
    add({Step::PrependText, std::nullopt, str_field(j, "prepend", where)});
  else if (t == "Strip")
    add({Step::Strip, std::nullopt, "", bool_field(j, "strip_left", true, where),
         bool_field(j, "strip_right", true, where)});
  else
    fail(where, ": normalizer type '", t, "' is not supported (supported: Sequence, NFC, NFD, ",
         "NFKC, NFKD, Lowercase, Replace, Prepend, Strip, StripAccents, ByteLevel)");
  return n;
}

std::string HfNormalizer::apply(std::string s) const {
  for (const auto& st : steps_) {
    switch (st->kind) {
      case Step::Nfc:
        s = unicode_normalize(s, NormalForm::NFC);
        break;
      case Step::Nfd:
        s = unicode_normalize(s, NormalForm::NFD);
        break;
      case Step::Nfkc:
        s = unicode_normalize(s, NormalForm::NFKC);
        break;
      case Step::Nfkd:
        s = unicode_normalize(s, NormalForm::NFKD);
        break;
      case Step::Lower:
        s = unicode_lowercase(s);
        break;
      case Step::StripAccents:
        s = strip_accents(s);
        break;
      case Step::Replace:
        s = replace_all(*st->re, s, st->text);
        break;
      case Step::PrependText:
        if (!s.empty()) s = st->text + s;
        break;
      case Step::ByteLevel: {
        std::string o;
        for (unsigned char c : s) o += byte_chars()[c];
        s = std::move(o);
        break;
      }
      case Step::Strip: {
        size_t b = 0, e = s.size(), len = 0;
        while (st->left && b < e && is_white_space(utf8_decode(s, b, &len))) b += len;
        while (st->right && e > b) {
          size_t k = e - 1;
          while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
          if (!is_white_space(utf8_decode(s, k, &len))) break;
          e = k;
        }
        s = s.substr(b, e - b);
        break;
      }
    }
  }
  return s;
}

// ---- pre-tokenizer ----

struct HfPreTokenizer::Step {
  enum Kind { Split, ByteLevel, Metaspace, Whitespace, WhitespaceSplit, Digits, Punctuation };
  Kind kind;
  std::optional<SplitRegex> re;
  Behavior behavior = Behavior::Isolated;
  bool invert = false, add_prefix_space = false, use_regex = true, split = true;
  std::string replacement;
  Prepend prepend = Prepend::Always;
};

HfPreTokenizer HfPreTokenizer::from_json(const json& j, const std::string& where) {
  HfPreTokenizer p;
  if (j.is_null()) return p;
  const std::string t = type_of(j, where);
  auto add = [&](Step s) { p.steps_.push_back(std::make_shared<const Step>(std::move(s))); };
  if (t == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      fail(where, ".pretokenizers must be an array");
    for (size_t i = 0; i < j["pretokenizers"].size(); ++i) {
      HfPreTokenizer inner =
          from_json(j["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]");
      p.steps_.insert(p.steps_.end(), inner.steps_.begin(), inner.steps_.end());
    }
  } else if (t == "Split") {
    Step s{Step::Split, pattern_field(j, where), behavior_field(j, where)};
    s.invert = bool_field(j, "invert", false, where);
    add(std::move(s));
  } else if (t == "ByteLevel") {
    Step s{Step::ByteLevel};
    s.add_prefix_space = bool_field(j, "add_prefix_space", true, where);
    s.use_regex = bool_field(j, "use_regex", true, where);
    add(std::move(s));
  } else if (t == "Metaspace") {
    Step s{Step::Metaspace};
    s.replacement = char_field(j, "replacement", where);
    s.prepend = prepend_field(j, where);
    s.split = bool_field(j, "split", true, where);
    add(std::move(s));
  } else if (t == "Whitespace") {
    // Rust's regex crate (not Oniguruma) runs this one: its \w is Alphabetic, marks, Nd, Pc and
    // the joiners (U+200C, U+200D: inside emoji sequences).
    const std::string w = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";
    add({Step::Whitespace, SplitRegex("[" + w + "]+|[^" + w + "\\s]+", where)});
  } else if (t == "WhitespaceSplit") {
    add({Step::WhitespaceSplit, SplitRegex("\\s+", where), Behavior::Removed});
  } else if (t == "Digits") {
    Step s{Step::Digits, SplitRegex("[0-9]", where)};
    s.behavior = bool_field(j, "individual_digits", false, where) ? Behavior::Isolated
                                                                  : Behavior::Contiguous;
    add(std::move(s));
  } else if (t == "Punctuation") {
    Step s{Step::Punctuation, SplitRegex("[\\p{P}!-/:-@\\[-`{-~]", where)};
    s.behavior = j.contains("behavior") ? behavior_field(j, where) : Behavior::Isolated;
    add(std::move(s));
  } else {
    fail(where, ": pre_tokenizer type '", t, "' is not supported (supported: Sequence, Split, ",
         "ByteLevel, Metaspace, Whitespace, WhitespaceSplit, Digits, Punctuation)");
  }
  return p;
}

void HfPreTokenizer::apply(std::vector<TextPiece>& pieces) const {
  for (const auto& st : steps_) {
    std::vector<TextPiece> out;
    out.reserve(pieces.size());
    for (TextPiece& p : pieces) {
      switch (st->kind) {
        case Step::Split:
        case Step::Digits:
        case Step::Punctuation:
          split_piece(p, st->re->find_all(p.text), st->behavior, st->invert, out);
          break;
        case Step::WhitespaceSplit:
          split_piece(p, st->re->find_all(p.text), Behavior::Removed, false, out);
          break;
        case Step::Whitespace:  // the words and punctuation runs are kept, the spaces dropped
          split_piece(p, st->re->find_all(p.text), Behavior::Removed, true, out);
          break;
        case Step::ByteLevel: {
          if (st->add_prefix_space && p.text.compare(0, 1, " ") != 0) p.text.insert(0, " ");
          std::vector<TextPiece> parts;
          if (st->use_regex)
            split_piece(p, gpt2_regex().find_all(p.text), Behavior::Isolated, false, parts);
          else if (!p.text.empty())
            parts.push_back(p);
          for (TextPiece& q : parts) {
            std::string mapped;
            mapped.reserve(q.text.size() * 2);
            for (unsigned char c : q.text) mapped += byte_chars()[c];
            out.push_back({std::move(mapped), q.at_start});
          }
          break;
        }
        case Step::Metaspace: {
          std::string s;
          for (char c : p.text)
            if (c == ' ')
              s += st->replacement;
            else
              s += c;
          const bool starts = s.compare(0, st->replacement.size(), st->replacement) == 0;
          if (!starts &&
              (st->prepend == Prepend::Always || (st->prepend == Prepend::First && p.at_start)))
            s.insert(0, st->replacement);
          TextPiece q{std::move(s), p.at_start};
          if (!st->split) {
            if (!q.text.empty()) out.push_back(std::move(q));
            break;
          }
          std::vector<std::pair<size_t, size_t>> found;
          for (size_t k = q.text.find(st->replacement); k != std::string::npos;
               k = q.text.find(st->replacement, k + st->replacement.size()))
            found.push_back({k, k + st->replacement.size()});
          split_piece(q, found, Behavior::MergedWithNext, false, out);
          break;
        }
      }
    }
    pieces = std::move(out);
  }
}

// ---- decoder ----

struct HfDecoder::Step {
  enum Kind { ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace };
  Kind kind;
  std::optional<SplitRegex> re;
  std::string text;
  Prepend prepend = Prepend::Always;
  size_t start = 0, stop = 0;
};

HfDecoder HfDecoder::from_json(const json& j, const std::string& where) {
  HfDecoder d;
  if (j.is_null()) return d;
  d.none_ = false;
  const std::string t = type_of(j, where);
  auto add = [&](Step s) { d.steps_.push_back(std::make_shared<const Step>(std::move(s))); };
  if (t == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array())
      fail(where, ".decoders must be an array");
    for (size_t i = 0; i < j["decoders"].size(); ++i) {
      HfDecoder inner = from_json(j["decoders"][i], where + ".decoders[" + std::to_string(i) + "]");
      d.steps_.insert(d.steps_.end(), inner.steps_.begin(), inner.steps_.end());
    }
  } else if (t == "ByteLevel")
    add({Step::ByteLevel});
  else if (t == "ByteFallback")
    add({Step::ByteFallback});
  else if (t == "Fuse")
    add({Step::Fuse});
  else if (t == "Metaspace") {
    Step s{Step::Metaspace};
    s.text = char_field(j, "replacement", where);
    s.prepend = prepend_field(j, where);
    add(std::move(s));
  } else if (t == "Strip") {
    Step s{Step::Strip};
    s.text = char_field(j, "content", where);
    auto count = [&](const char* k) -> size_t {
      if (!j.contains(k) || !j[k].is_number_unsigned()) fail(where, ".", k, " must be a count");
      return j[k].get<size_t>();
    };
    s.start = count("start"), s.stop = count("stop");
    add(std::move(s));
  } else if (t == "Replace") {
    add({Step::Replace, pattern_field(j, where), str_field(j, "content", where)});
  } else {
    fail(where, ": decoder type '", t, "' is not supported (supported: Sequence, ByteLevel, ",
         "Metaspace, ByteFallback, Fuse, Strip, Replace)");
  }
  return d;
}

std::string HfDecoder::decode(std::vector<std::string> tokens) const {
  if (none_) {
    std::string s;
    for (size_t i = 0; i < tokens.size(); ++i) s += (i ? " " : "") + tokens[i];
    return s;
  }
  static const auto char_bytes = [] {
    std::map<std::string, unsigned char> m;
    for (int b = 0; b < 256; ++b) m[byte_chars()[size_t(b)]] = static_cast<unsigned char>(b);
    return m;
  }();
  for (const auto& st : steps_) {
    std::vector<std::string> out;
    switch (st->kind) {
      case Step::ByteLevel: {
        // Every token's characters back to bytes (a token with a character outside the
        // alphabet stays as its UTF-8), then all of them as one lossy UTF-8 string.
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string b;
          bool ok = true;
          for (size_t i = 0, len = 0; i < t.size() && ok; i += len) {
            utf8_decode(t, i, &len);
            auto it = char_bytes.find(t.substr(i, len));
            if (it == char_bytes.end())
              ok = false;
            else
              b += char(it->second);
          }
          bytes += ok ? b : t;
        }
        out.push_back(utf8_lossy(bytes));
        break;
      }
      case Step::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string s;
          const std::string& t = tokens[i];
          for (size_t k = 0; k < t.size();) {
            if (t.compare(k, st->text.size(), st->text) == 0) {
              if (!(i == 0 && st->prepend != Prepend::Never)) s += ' ';
              k += st->text.size();
            } else {
              s += t[k++];
            }
          }
          out.push_back(std::move(s));
        }
        break;
      case Step::ByteFallback: {
        std::string run;
        size_t run_n = 0;
        auto flush = [&] {
          if (!run_n) return;
          if (utf8_lossy(run) == run)
            out.push_back(run);
          else
            for (size_t k = 0; k < run_n; ++k) out.push_back("\xEF\xBF\xBD");
          run.clear(), run_n = 0;
        };
        for (const std::string& t : tokens) {
          auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) &&
              hex(t[4])) {
            run += char(std::stoi(t.substr(3, 2), nullptr, 16));
            ++run_n;
          } else {
            flush();
            out.push_back(t);
          }
        }
        flush();
        break;
      }
      case Step::Fuse: {
        std::string s;
        for (const std::string& t : tokens) s += t;
        out.push_back(std::move(s));
        break;
      }
      case Step::Strip:
        for (const std::string& t : tokens) {
          // Up to start leading and stop trailing copies of the character removed.
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < st->start && t.compare(b, st->text.size(), st->text) == 0; ++k)
            b += st->text.size();
          for (size_t k = 0; k < st->stop && e >= b + st->text.size() &&
                             t.compare(e - st->text.size(), st->text.size(), st->text) == 0;
               ++k)
            e -= st->text.size();
          out.push_back(t.substr(b, e - b));
        }
        break;
      case Step::Replace:
        for (const std::string& t : tokens) out.push_back(replace_all(*st->re, t, st->text));
        break;
    }
    tokens = std::move(out);
  }
  std::string s;
  for (const std::string& t : tokens) s += t;
  return s;
}

// ---- post-processor ----

HfPostProcessor HfPostProcessor::from_json(const json& j, const std::string& where) {
  HfPostProcessor p;
  if (j.is_null()) return p;
  const std::string t = type_of(j, where);
  if (t == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      fail(where, ".processors must be an array");
    for (size_t i = 0; i < j["processors"].size(); ++i) {
      HfPostProcessor inner =
          from_json(j["processors"][i], where + ".processors[" + std::to_string(i) + "]");
      // Each processor wraps the previous one's output.
      p.prefix_.insert(p.prefix_.begin(), inner.prefix_.begin(), inner.prefix_.end());
      p.suffix_.insert(p.suffix_.end(), inner.suffix_.begin(), inner.suffix_.end());
    }
  } else if (t == "ByteLevel") {
    // Offsets only; the ids are unchanged.
  } else if (t == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array()) fail(where, ".single must be an array");
    const json& specials = j.value("special_tokens", json::object());
    bool seen_a = false;
    for (const json& e : j["single"]) {
      if (e.contains("Sequence")) {
        if (seen_a) fail(where, ".single has more than one Sequence");
        seen_a = true;
        continue;
      }
      if (!e.contains("SpecialToken") || !e["SpecialToken"].contains("id") ||
          !e["SpecialToken"]["id"].is_string())
        fail(where,
             ".single: entries must be {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
      const std::string name = e["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") ||
          !specials[name]["ids"].is_array())
        fail(where, ".special_tokens has no ids for '", name, "'");
      for (const json& id : specials[name]["ids"]) {
        if (!id.is_number_integer()) fail(where, ".special_tokens['", name, "'].ids: not an id");
        (seen_a ? p.suffix_ : p.prefix_).push_back(id.get<int32_t>());
      }
    }
    if (!seen_a) fail(where, ".single has no {\"Sequence\": ...}");
  } else if (t == "BertProcessing" || t == "RobertaProcessing") {
    auto token = [&](const char* k) {
      if (!j.contains(k) || !j[k].is_array() || j[k].size() != 2 || !j[k][1].is_number_integer())
        fail(where, ".", k, " must be [token, id]");
      return j[k][1].get<int32_t>();
    };
    p.prefix_ = {token("cls")};
    p.suffix_ = {token("sep")};
  } else {
    fail(where, ": post_processor type '", t, "' is not supported (supported: Sequence, ",
         "ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing)");
  }
  return p;
}

std::vector<int32_t> HfPostProcessor::apply(const std::vector<int32_t>& ids) const {
  std::vector<int32_t> out(prefix_);
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

}  // namespace lamina
