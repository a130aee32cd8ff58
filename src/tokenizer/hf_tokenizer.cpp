#include "tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"
#include "tokenizer/unicode_text.h"

namespace lamina {
using json = nlohmann::json;

void HfTokenizer::Trie::insert(const std::string& s, int32_t token) {
  int32_t n = 0;
  for (unsigned char c : s) {
    auto it = nodes[size_t(n)].next.find(c);
    if (it == nodes[size_t(n)].next.end()) {
      nodes.push_back(Node{});
      const int32_t k = int32_t(nodes.size() - 1);
      nodes[size_t(n)].next.emplace(c, k);
      n = k;
    } else {
      n = it->second;
    }
  }
  if (nodes[size_t(n)].token < 0) nodes[size_t(n)].token = token;
}

std::pair<int32_t, size_t> HfTokenizer::Trie::longest(const std::string& s, size_t i) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t n = 0;
  for (size_t k = i; k < s.size(); ++k) {
    auto it = nodes[size_t(n)].next.find(static_cast<unsigned char>(s[k]));
    if (it == nodes[size_t(n)].next.end()) break;
    n = it->second;
    if (nodes[size_t(n)].token >= 0) best = {nodes[size_t(n)].token, k + 1 - i};
  }
  return best;
}

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const std::string& path) {
  auto t = std::make_shared<HfTokenizer>();
  t->path_ = path;
  const json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": expected a JSON object");
  if (!j.contains("model")) fail(path, ": no \"model\"");
  t->model_ = BpeModel::from_json(j["model"], path);
  t->normalizer_ = HfNormalizer::from_json(j.value("normalizer", json()), path + ": normalizer");
  t->pre_ = HfPreTokenizer::from_json(j.value("pre_tokenizer", json()), path + ": pre_tokenizer");
  t->decoder_ = HfDecoder::from_json(j.value("decoder", json()), path + ": decoder");
  t->post_ =
      HfPostProcessor::from_json(j.value("post_processor", json()), path + ": post_processor");
  t->size_ = t->model_.size();
  const json& added = j.value("added_tokens", json::array());
  if (!added.is_array()) fail(path, ": added_tokens must be an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const json& e = added[i];
    const std::string where = path + ": added_tokens[" + std::to_string(i) + "]";
    if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() ||
        !e.contains("content") || !e["content"].is_string())
      fail(where, ": needs an integer id and a string content");
    AddedToken a;
    a.id = e["id"].get<int32_t>();
    if (a.id < 0 || a.id >= (1 << 30)) fail(where, ": id ", a.id, " is out of range");
    a.content = e["content"].get<std::string>();
    if (a.content.empty()) fail(where, ": empty content");
    auto flag = [&](const char* k, bool dflt) {
      if (!e.contains(k) || e[k].is_null()) return dflt;
      if (!e[k].is_boolean()) fail(where, ".", k, " must be true or false");
      return e[k].get<bool>();
    };
    a.special = flag("special", false);
    a.normalized = flag("normalized", !a.special);
    a.lstrip = flag("lstrip", false);
    a.rstrip = flag("rstrip", false);
    a.single_word = flag("single_word", false);
    if (auto in_model = t->model_.id(a.content); in_model && *in_model != a.id)
      fail(where, ": '", a.content, "' has id ", a.id, " but the model's vocabulary gives it ",
           *in_model);
    t->added_by_id_[a.id] = t->added_.size();
    t->added_by_content_[a.content] = a.id;
    t->size_ = std::max<int64_t>(t->size_, int64_t(a.id) + 1);
    t->added_.push_back(std::move(a));
  }
  for (size_t k = 0; k < t->added_.size(); ++k) {
    AddedToken& a = t->added_[k];
    a.decode_form = a.normalized ? t->normalizer_.apply(a.content) : a.content;
    if (a.normalized) {
      t->normalized_trie_.insert(a.decode_form, int32_t(k));
      t->has_normalized_ = true;
    } else {
      t->raw_trie_.insert(a.content, int32_t(k));
      t->has_raw_ = true;
    }
  }
  return t;
}

// tokenizers' AddedVocabulary::find_matches: leftmost-longest matches; a single_word token
// next to a word character is skipped (the search goes on after it); lstrip / rstrip take the
// white space beside the token into its match.
void HfTokenizer::split_added(const std::string& s, const Trie& trie, bool at_start,
                              std::vector<Split>& out) const {
  size_t from = 0, i = 0;  // from: the start of the text not yet emitted
  auto last_char_before = [&](size_t at) -> char32_t {
    size_t k = at - 1, len = 0;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    return utf8_decode(s, k, &len);
  };
  while (i < s.size()) {
    auto [tok, len] = trie.longest(s, i);
    if (tok < 0) {
      ++i;
      continue;
    }
    const AddedToken& a = added_[size_t(tok)];
    size_t start = i, stop = i + len;
    i = stop;
    if (a.single_word) {
      size_t l = 0;
      const bool left_ok = start == 0 || !is_word_char(last_char_before(start));
      const bool right_ok = stop == s.size() || !is_word_char(utf8_decode(s, stop, &l));
      if (!left_ok || !right_ok) continue;
    }
    if (a.lstrip) {
      size_t b = start;
      while (b > from && is_white_space(last_char_before(b))) {
        size_t k = b - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        b = k;
      }
      start = b;
    }
    if (a.rstrip) {
      size_t l = 0;
      while (stop < s.size() && is_white_space(utf8_decode(s, stop, &l))) stop += l;
      i = stop;
    }
    if (start > from) out.push_back({s.substr(from, start - from), -1, at_start && from == 0});
    out.push_back({s.substr(start, stop - start), tok, false});
    from = stop;
  }
  if (from < s.size()) out.push_back({s.substr(from), -1, at_start && from == 0});
}

std::vector<int32_t> HfTokenizer::encode(const std::string& text, bool add_special) const {
  std::vector<int32_t> ids;
  // 1. Tokens matched in the raw text; 2. the rest normalized, and normalized tokens matched in
  // it; 3. each remaining piece pre-tokenized and encoded by the model.
  std::vector<Split> raw;
  if (has_raw_)
    split_added(text, raw_trie_, true, raw);
  else if (!text.empty())
    raw.push_back({text, -1, true});
  for (Split& r : raw) {
    if (r.added >= 0) {
      ids.push_back(added_[size_t(r.added)].id);
      continue;
    }
    std::vector<Split> norm;
    std::string n = normalizer_.apply(std::move(r.text));
    if (has_normalized_)
      split_added(n, normalized_trie_, r.at_start, norm);
    else if (!n.empty())
      norm.push_back({std::move(n), -1, r.at_start});
    for (Split& m : norm) {
      if (m.added >= 0) {
        ids.push_back(added_[size_t(m.added)].id);
        continue;
      }
      std::vector<TextPiece> pieces{{std::move(m.text), m.at_start}};
      pre_.apply(pieces);
      for (const TextPiece& p : pieces) model_.encode_word(p.text, ids);
    }
  }
  return add_special ? post_.apply(ids) : ids;
}

std::vector<std::string> HfTokenizer::pieces(const std::vector<int32_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) out.push_back(piece(id));
  return out;
}

std::string HfTokenizer::piece(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (id < 0 || id >= model_.size() || (model_.piece(id).empty()))
    fail("token id ", id, " is outside the vocabulary of ", size_, " (", path_, ")");
  return model_.piece(id);
}

bool HfTokenizer::is_special(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_[it->second].special;
}

std::optional<int32_t> HfTokenizer::token_id(const std::string& content) const {
  if (auto it = added_by_content_.find(content); it != added_by_content_.end()) return it->second;
  return model_.id(content);
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    auto it = added_by_id_.find(id);
    tokens.push_back(it != added_by_id_.end() ? added_[it->second].decode_form : piece(id));
  }
  return decoder_.decode(std::move(tokens));
}

}  // namespace lamina
