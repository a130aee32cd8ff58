#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"
#include "tokenizer/unicode_text.h"

namespace lamina {
using json = nlohmann::json;

namespace {

std::optional<std::string> opt_string(const json& m, const char* key, const std::string& where) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) fail(where, ": model.", key, " must be a string or null");
  return it->get<std::string>();
}

bool opt_bool(const json& m, const char* key, bool dflt, const std::string& where) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail(where, ": model.", key, " must be true or false");
  return it->get<bool>();
}

}  // namespace

BpeModel BpeModel::from_json(const json& m, const std::string& where) {
  BpeModel b;
  if (!m.is_object() || m.value("type", std::string()) != "BPE")
    fail(where, ": model.type must be \"BPE\" (got ",
         m.is_object() && m.contains("type") ? m["type"].dump() : std::string("none"),
         "; lamina reads BPE tokenizer.json files)");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    fail(where,
         ": model.dropout is set (BPE dropout is a training-time option lamina does not apply)");
  const json& vocab = m.value("vocab", json());
  if (!vocab.is_object() || vocab.empty()) fail(where, ": model.vocab must be a non-empty object");
  int64_t max_id = -1;
  b.vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= (1 << 30))
      fail(where, ": model.vocab['", it.key().substr(0, 40), "'] is not a valid id");
    const int32_t id = it->get<int32_t>();
    b.vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  b.pieces_.assign(size_t(max_id + 1), std::string());
  for (auto& [piece, id] : b.vocab_) b.pieces_[size_t(id)] = piece;
  b.prefix_ = opt_string(m, "continuing_subword_prefix", where).value_or("");
  b.suffix_ = opt_string(m, "end_of_word_suffix", where).value_or("");
  b.byte_fallback_ = opt_bool(m, "byte_fallback", false, where);
  b.fuse_unk_ = opt_bool(m, "fuse_unk", false, where);
  b.ignore_merges_ = opt_bool(m, "ignore_merges", false, where);
  if (auto u = opt_string(m, "unk_token", where)) {
    auto id = b.id(*u);
    if (!id) fail(where, ": model.unk_token '", *u, "' is not in the vocabulary");
    b.unk_ = *id;
  }
  for (int i = 0; i < 256; ++i) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", i);
    b.byte_ids_[i] = b.id(name).value_or(-1);
  }
  // Merges: "a b" strings (older files) or ["a", "b"] pairs.
  const json& merges = m.value("merges", json::array());
  if (!merges.is_array()) fail(where, ": model.merges must be an array");
  b.merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const json& e : merges) {
    std::string a, c;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(where, ": model.merges[", rank, "] '", s.substr(0, 40), "' is not \"a b\"");
      a = s.substr(0, sp), c = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>(), c = e[1].get<std::string>();
    } else {
      fail(where, ": model.merges[", rank, "] is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto ia = b.id(a), ic = b.id(c);
    const std::string merged =
        a + (c.compare(0, b.prefix_.size(), b.prefix_) == 0 ? c.substr(b.prefix_.size()) : c);
    auto im = b.id(merged);
    if (!ia || !ic || !im)
      fail(where, ": model.merges[", rank, "] ('", a.substr(0, 30), "', '", c.substr(0, 30),
           "') names a token outside the vocabulary");
    b.merges_.emplace((uint64_t(uint32_t(*ia)) << 32) | uint32_t(*ic), std::pair{rank, *im});
    ++rank;
  }
  return b;
}

std::optional<int32_t> BpeModel::id(std::string_view piece) const {
  auto it = vocab_.find(piece);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::piece(int32_t id) const {
  static const std::string kNone;
  return id >= 0 && size_t(id) < pieces_.size() ? pieces_[size_t(id)] : kNone;
}

std::vector<std::string> BpeModel::merges() const {
  std::vector<std::pair<int32_t, uint64_t>> ranked;
  ranked.reserve(merges_.size());
  for (auto& [pair, rm] : merges_) ranked.push_back({rm.first, pair});
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> out;
  out.reserve(ranked.size());
  for (auto& [rank, pair] : ranked)
    out.push_back(piece(int32_t(pair >> 32)) + " " + piece(int32_t(pair & 0xffffffffu)));
  return out;
}

void BpeModel::encode_word(std::string_view w, std::vector<int32_t>& out) const {
  if (w.empty()) return;
  if (ignore_merges_)
    if (auto whole = id(w)) {
      out.push_back(*whole);
      return;
    }
  // The symbols, one per character (or byte / unk).
  std::vector<int32_t> sym;
  sym.reserve(w.size());
  std::optional<int32_t> pending_unk;
  std::string s;
  for (size_t i = 0; i < w.size();) {
    size_t len = utf8_char_length(static_cast<unsigned char>(w[i]));
    len = std::min(len, w.size() - i);
    const bool first = i == 0, last = i + len == w.size();
    s.assign(first ? "" : prefix_);
    s.append(w.substr(i, len));
    if (last) s += suffix_;
    i += len;
    if (auto t = id(s)) {
      if (pending_unk) sym.push_back(*pending_unk), pending_unk.reset();
      sym.push_back(*t);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : s) sym.push_back(byte_ids_[b]);
        continue;
      }
    }
    if (unk_) {
      if (pending_unk && !fuse_unk_) sym.push_back(*pending_unk);
      pending_unk = *unk_;
    }
  }
  if (pending_unk) sym.push_back(*pending_unk);
  // Merge: a heap of (rank, position) over adjacent pairs of a linked list of symbols; entries
  // made stale by an earlier merge are skipped when popped.
  const int64_t n = int64_t(sym.size());
  std::vector<int64_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) prev[size_t(i)] = i - 1, next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  struct Cand {
    int32_t rank;
    int64_t pos;
    int32_t left, right;  // the pair's ids when pushed (to detect stale entries)
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
  auto push = [&](int64_t i) {
    const int64_t j = i >= 0 ? next[size_t(i)] : -1;
    if (i < 0 || j < 0) return;
    auto it = merges_.find((uint64_t(uint32_t(sym[size_t(i)])) << 32) | uint32_t(sym[size_t(j)]));
    if (it != merges_.end()) heap.push({it->second.first, i, sym[size_t(i)], sym[size_t(j)]});
  };
  for (int64_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> gone(static_cast<size_t>(n), false);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int64_t i = c.pos;
    if (gone[size_t(i)]) continue;
    const int64_t j = next[size_t(i)];
    if (j < 0 || sym[size_t(i)] != c.left || sym[size_t(j)] != c.right) continue;
    auto it = merges_.find((uint64_t(uint32_t(c.left)) << 32) | uint32_t(c.right));
    sym[size_t(i)] = it->second.second;
    gone[size_t(j)] = true;
    next[size_t(i)] = next[size_t(j)];
    if (next[size_t(j)] >= 0) prev[size_t(next[size_t(j)])] = i;
    push(prev[size_t(i)]);
    push(i);
  }
  for (int64_t i = 0; i < n; ++i)
    if (!gone[size_t(i)]) out.push_back(sym[size_t(i)]);
}

}  // namespace lamina
