#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/parse_number.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "tokenizer/hf_tokenizer.h"

namespace lamina {
using json = nlohmann::json;

namespace {

json read_json(const std::string& path) {
  return read_json_file(path);
}

// "bos_token" may be a string or an AddedToken object {"content": ...}.
std::optional<std::string> token_content(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// The model's default chat template, as transformers finds it: DIR/chat_template.jinja when
// present (what save_pretrained writes since 4.43), else tokenizer_config.json's chat_template —
// a string, or a list of {"name", "template"} from which the one named "default" is used.
std::string read_chat_template(const std::string& dir, const json& cfg,
                               const std::string& cfg_path) {
  const std::string jinja = dir + "/chat_template.jinja";
  if (file_exists(jinja)) return read_text_file(jinja);
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array())
    fail(cfg_path, ": chat_template must be a string or a list of {\"name\", \"template\"}");
  std::string found;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() ||
        !e.contains("template") || !e["template"].is_string())
      fail(cfg_path, ": chat_template[", i, "] must be {\"name\": string, \"template\": string}");
    if (e["name"].get<std::string>() == "default") found = e["template"].get<std::string>();
  }
  return found;  // no "default": only named templates (tool_use, rag), none used by default
}

}  // namespace

Tokenizer Tokenizer::from_sentencepiece(const std::string& path) {
  Tokenizer t;
  t.sp_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
  if (!file_exists(path)) fail(path, ": tokenizer not found");
  // Through read_text_file: a directory or an unreadable file is named as such (SentencePiece
  // would report "basic_filebuf::underflow").
  auto st = t.sp_->LoadFromSerializedProto(read_text_file(path));
  if (!st.ok()) fail(path, ": cannot load SentencePiece model: ", st.ToString());
  t.bos_ = t.sp_->bos_id();
  t.eos_ = t.sp_->eos_id();
  for (int id : {t.sp_->bos_id(), t.sp_->eos_id(), t.sp_->unk_id()}) {
    if (id < 0) continue;
    t.specials_[t.sp_->IdToPiece(id)] = id;
    t.special_flag_[id] = id != t.sp_->unk_id();
  }
  return t;
}

Tokenizer Tokenizer::load(const std::string& dir) {
  std::string model = dir + "/tokenizer.model";
  if (!file_exists(model)) {
    if (file_exists(dir + "/tokenizer.json")) return load_tokenizer_json(dir);
    fail(dir, ": no tokenizer (neither a SentencePiece tokenizer.model nor a tokenizer.json)");
  }
  Tokenizer t = from_sentencepiece(model);
  const int32_t base = int32_t(t.sp_->GetPieceSize());
  auto add = [&](const std::string& where, int64_t id, const std::string& content, bool special) {
    if (id < 0 || id > (1 << 30)) fail(where, ": added token '", content, "' has invalid id ", id);
    if (id < base) {
      if (t.sp_->IdToPiece(int(id)) != content)
        fail(where, ": added token '", content, "' claims id ", id, " which is '",
             t.sp_->IdToPiece(int(id)), "' in tokenizer.model");
    } else {
      t.added_[int32_t(id)] = content;
    }
    t.specials_[content] = int32_t(id);
    t.special_flag_[int32_t(id)] = special;
  };
  std::string cfg_path = dir + "/tokenizer_config.json";
  json cfg = json::object();
  if (file_exists(cfg_path)) cfg = read_json(cfg_path);
  if (!cfg.is_object()) fail(cfg_path, ": expected a JSON object");
  if (auto a = cfg.find("added_tokens_decoder"); a != cfg.end() && !a->is_null()) {
    if (!a->is_object()) fail(cfg_path, ": added_tokens_decoder must be an object {id: token}");
    for (auto it = a->begin(); it != a->end(); ++it) {
      if (!it->is_object() || !it->contains("content") || !(*it)["content"].is_string())
        fail(cfg_path, ": added_tokens_decoder['", it.key(), "'] has no string 'content'");
      if (it->contains("special") && !(*it)["special"].is_boolean())
        fail(cfg_path, ": added_tokens_decoder['", it.key(), "'].special must be true or false");
      auto parsed = parse_integer(it.key());
      if (!parsed || *parsed < 0 || *parsed > INT32_MAX)
        fail(cfg_path, ": added_tokens_decoder key '", it.key().substr(0, 80), "' is not an id");
      const int64_t id = *parsed;
      add(cfg_path, id, (*it)["content"].get<std::string>(), it->value("special", true));
    }
  }
  std::string added_path = dir + "/added_tokens.json";
  if (file_exists(added_path)) {
    json a = read_json(added_path);
    if (!a.is_object()) fail(added_path, ": expected an object {token: id}");
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!it->is_number_integer()) fail(added_path, ": id of '", it.key(), "' is not an integer");
      add(added_path, it->get<int64_t>(), it.key(), true);
    }
  }
  std::string tj_path = dir + "/tokenizer.json";
  if (file_exists(tj_path)) {
    json tj = read_json(tj_path);
    if (auto a = tj.find("added_tokens"); a != tj.end() && a->is_array())
      for (auto& e : *a) {
        if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() ||
            !e.contains("content") || !e["content"].is_string() ||
            (e.contains("special") && !e["special"].is_boolean()))
          fail(tj_path,
               ": malformed entry in added_tokens (integer id, string content, boolean special): ",
               e.dump().substr(0, 80));
        add(tj_path, e["id"].get<int64_t>(), e["content"].get<std::string>(),
            e.value("special", true));
      }
  }
  for (int64_t id = base; id < base + int64_t(t.added_.size()); ++id)
    if (!t.added_.count(int32_t(id)))
      fail(dir, ": added token ids are not contiguous after the SentencePiece vocabulary (", base,
           " pieces; id ", id, " missing)");
  if (auto b = token_content(cfg, "bos_token")) {
    auto id = t.token_id(*b);
    if (!id) fail(cfg_path, ": bos_token '", *b, "' is not in the vocabulary");
    t.bos_ = *id;
  }
  if (auto e = token_content(cfg, "eos_token")) {
    auto id = t.token_id(*e);
    if (!id) fail(cfg_path, ": eos_token '", *e, "' is not in the vocabulary");
    t.eos_ = *id;
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
    t.add_bos_ = cfg["add_bos_token"].get<bool>();
  t.chat_template_ = read_chat_template(dir, cfg, cfg_path);
  return t;
}

// tokenizer.json and, beside it, tokenizer_config.json's bos / eos tokens and chat template (the
// added tokens are tokenizer.json's own). BOS is what the post-processor puts first.
Tokenizer Tokenizer::load_tokenizer_json(const std::string& dir) {
  Tokenizer t;
  t.hf_ = HfTokenizer::load(dir + "/tokenizer.json");
  const auto& prefix = t.hf_->post_processor().prefix();
  t.add_bos_ = !prefix.empty();
  t.bos_ = prefix.empty() ? -1 : prefix.front();
  t.eos_ = -1;
  const std::string cfg_path = dir + "/tokenizer_config.json";
  json cfg = file_exists(cfg_path) ? read_json(cfg_path) : json::object();
  if (!cfg.is_object()) fail(cfg_path, ": expected a JSON object");
  if (auto b = token_content(cfg, "bos_token")) {
    auto id = t.hf_->token_id(*b);
    if (!id) fail(cfg_path, ": bos_token '", *b, "' is not in the vocabulary");
    if (prefix.empty()) t.bos_ = *id;
  }
  if (auto e = token_content(cfg, "eos_token")) {
    auto id = t.hf_->token_id(*e);
    if (!id) fail(cfg_path, ": eos_token '", *e, "' is not in the vocabulary");
    t.eos_ = *id;
  }
  t.chat_template_ = read_chat_template(dir, cfg, cfg_path);
  return t;
}

int64_t Tokenizer::size() const {
  if (hf_) return hf_->size();
  return sp_->GetPieceSize() + int64_t(added_.size());
}

std::optional<int32_t> Tokenizer::token_id(const std::string& content) const {
  if (hf_) return hf_->token_id(content);
  if (auto it = specials_.find(content); it != specials_.end()) return it->second;
  int id = sp_->PieceToId(content);
  if (id == sp_->unk_id() && content != sp_->IdToPiece(sp_->unk_id())) return std::nullopt;
  return id;
}

std::string Tokenizer::piece(int32_t id) const {
  if (hf_) return hf_->piece(id);
  if (auto it = added_.find(id); it != added_.end()) return it->second;
  if (id < 0 || id >= sp_->GetPieceSize())
    fail("token id ", id, " is outside the vocabulary of ", size());
  return sp_->IdToPiece(id);
}

std::vector<std::string> Tokenizer::bpe_merges() const {
  return hf_ ? hf_->merges() : std::vector<std::string>{};
}

std::vector<Tokenizer::Piece> Tokenizer::vocabulary() const {
  std::vector<Piece> v(static_cast<size_t>(size()));
  if (hf_) {
    for (int32_t i = 0; i < int32_t(v.size()); ++i) {
      Piece& p = v[size_t(i)];
      if (!hf_->has_id(i)) continue;  // a hole in the ids
      p.text = hf_->piece(i);
      p.kind = hf_->is_special(i) ? PieceKind::Control
               : hf_->is_added(i) ? PieceKind::UserDefined
                                  : PieceKind::Normal;
    }
    return v;
  }
  const int n = sp_->GetPieceSize();
  for (int i = 0; i < n; ++i) {
    Piece& p = v[size_t(i)];
    p.text = sp_->IdToPiece(i);
    p.score = sp_->GetScore(i);
    p.kind = sp_->IsUnknown(i)   ? PieceKind::Unknown
             : sp_->IsControl(i) ? PieceKind::Control
             : sp_->IsUnused(i)  ? PieceKind::Unused
             : sp_->IsByte(i)    ? PieceKind::Byte
                                 : PieceKind::Normal;
  }
  for (auto& [id, content] : added_) {
    Piece& p = v.at(size_t(id));
    p.text = content;
    auto f = special_flag_.find(id);
    p.kind = f != special_flag_.end() && f->second ? PieceKind::Control : PieceKind::UserDefined;
  }
  return v;
}

std::vector<int32_t> Tokenizer::encode_plain(const std::string& text) const {
  if (hf_) return hf_->encode(text, false);
  std::vector<int> ids;
  sp_->Encode(text, &ids);
  return {ids.begin(), ids.end()};
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  if (hf_) return hf_->encode(text, add_bos);
  std::vector<int32_t> out;
  if (add_bos) out.push_back(bos_);
  size_t seg = 0, i = 0;
  auto flush = [&](size_t end) {
    if (end > seg) {
      auto ids = encode_plain(text.substr(seg, end - seg));
      out.insert(out.end(), ids.begin(), ids.end());
    }
  };
  while (i < text.size()) {
    // Longest special token starting at i (std::map is ordered; few entries, so a scan is fine).
    size_t best = 0;
    int32_t best_id = -1;
    for (auto& [content, id] : specials_)
      if (content.size() > best && text.compare(i, content.size(), content) == 0)
        best = content.size(), best_id = id;
    if (best) {
      flush(i);
      out.push_back(best_id);
      i += best;
      seg = i;
    } else {
      ++i;
    }
  }
  flush(text.size());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (hf_) return hf_->decode(ids, skip_special);
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string s;
    sp_->Decode(run, &s);
    out += s;
    run.clear();
  };
  for (int32_t id : ids) {
    auto sf = special_flag_.find(id);
    bool is_special = sf != special_flag_.end() && sf->second;
    if (added_.count(id) || (is_special && sp_->IsControl(id))) {
      flush();
      if (!(skip_special && is_special)) out += piece(id);
      continue;
    }
    if (id < 0 || id >= sp_->GetPieceSize())
      fail("token id ", id, " is outside the vocabulary of ", size());
    run.push_back(id);
  }
  flush();
  return out;
}

}  // namespace lamina
