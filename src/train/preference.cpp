#include "train/preference.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"

namespace lamina {
using json = nlohmann::json;

namespace {

// trl.data_utils.is_conversational, per field: a list whose first element is a message.
bool is_messages(const json& v) {
  return v.is_array() && !v.empty() && v[0].is_object() && v[0].contains("role");
}

// A message's content as the chat template sees it: the string, or its text parts joined in order
// (how the templates that take content parts render them).
std::string content_text(const json& c, const std::string& at) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array())
    fail(at,
         ": \"content\" must be a string or a list of {\"type\": \"text\", \"text\": ...} parts");
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    const std::string pat = at + " content part " + std::to_string(i);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      fail(pat, ": expected an object with a string \"type\"");
    const std::string type = part["type"];
    if (type != "text")
      fail(pat, ": type '", type, "' is not text (lamina trains text-only models)");
    if (!part.contains("text") || !part["text"].is_string())
      fail(pat, ": a text part needs a string \"text\"");
    out += part["text"].get<std::string>();
  }
  return out;
}

std::vector<ChatMessage> to_messages(const json& list, size_t from, size_t to,
                                     const std::string& where, const char* field) {
  std::vector<ChatMessage> out;
  for (size_t i = from; i < to; ++i) {
    const json& m = list[i];
    const std::string at = where + ": \"" + field + "\" message " + std::to_string(i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
      fail(at, ": each message needs a string \"role\" and a \"content\"");
    const std::string role = m["role"];
    if (role != "system" && role != "user" && role != "assistant")
      fail(at, ": role '", role, "' is not system, user or assistant");
    out.push_back({role, content_text(m["content"], at)});
  }
  return out;
}

// Byte offsets of the UTF-8 code points of s, and s.size() at the end: Python indexes strings by
// code point, so trl.extract_prompt's common prefix never splits a character.
std::vector<size_t> code_points(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  return at;
}

// trl.extract_prompt on strings: the first differing character, moved back one when the character
// before it is a space (the space starts the completions); when one is a prefix of the other, the
// loop's last index (the shorter length - 1).
size_t text_prompt_end(const std::string& c, const std::string& r) {
  const auto pc = code_points(c), pr = code_points(r);
  const size_t n = std::min(pc.size(), pr.size()) - 1;  // code points in the shorter
  auto cp = [](const std::string& s, const std::vector<size_t>& p, size_t i) {
    return s.substr(p[i], p[i + 1] - p[i]);
  };
  size_t idx = n - 1;
  for (size_t i = 0; i < n; ++i) {
    if (cp(c, pc, i) != cp(r, pr, i)) {
      idx = i;
      if (i > 0 && cp(c, pc, i - 1) == " ") --idx;
      break;
    }
  }
  return pc[idx];  // bytes
}

// trl.extract_prompt on message lists: the first message that differs (compared whole, as dicts);
// when one list is a prefix of the other, the shorter length - 1.
size_t messages_prompt_end(const json& c, const json& r) {
  const size_t n = std::min(c.size(), r.size());
  for (size_t i = 0; i < n; ++i)
    if (c[i] != r[i]) return i;
  return n - 1;
}

size_t common_prefix_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

}  // namespace

PreferenceRow parse_preference(const std::string& line, const std::string& where) {
  json j = parse_json_line(line, where);
  if (!j.is_object() || !j.contains("chosen") || !j.contains("rejected"))
    fail(where, ": expected \"chosen\" and \"rejected\" (and optionally \"prompt\")");
  const json &c = j["chosen"], &r = j["rejected"];
  auto kind = [&](const json& v, const char* field) {
    if (v.is_string()) return false;
    if (is_messages(v)) return true;
    fail(where, ": \"", field, "\" must be a string or a non-empty list of messages");
  };
  PreferenceRow row;
  row.conversational = kind(c, "chosen");
  if (kind(r, "rejected") != row.conversational)
    fail(where, ": \"chosen\" and \"rejected\" must both be strings or both message lists");
  const bool has_prompt = j.contains("prompt");
  if (has_prompt && !j["prompt"].is_string() && !is_messages(j["prompt"]))
    fail(where, ": \"prompt\" must be a string or a non-empty list of messages");

  if (!row.conversational) {
    if (has_prompt && !j["prompt"].is_string())
      fail(where, ": a message-list \"prompt\" needs message-list \"chosen\" and \"rejected\"");
    std::string cs = c, rs = r;
    if (cs.empty() || rs.empty()) fail(where, ": empty \"chosen\" or \"rejected\"");
    if (has_prompt) {
      row.prompt = j["prompt"], row.chosen = cs, row.rejected = rs;
    } else {
      const size_t end = text_prompt_end(cs, rs);
      if (end == 0)
        fail(where, ": \"chosen\" and \"rejected\" share no prompt (no \"prompt\" given)");
      row.prompt = cs.substr(0, end), row.chosen = cs.substr(end), row.rejected = rs.substr(end);
    }
    return row;
  }

  // Conversational.
  size_t end = 0;  // messages of chosen/rejected that belong to the prompt
  if (!has_prompt || j["prompt"].is_string()) end = messages_prompt_end(c, r);
  if (has_prompt && j["prompt"].is_string()) {
    if (end == 0) row.prompt_msgs.push_back({"user", j["prompt"].get<std::string>()});
  } else if (has_prompt) {
    row.prompt_msgs = to_messages(j["prompt"], 0, j["prompt"].size(), where, "prompt");
  } else if (end == 0) {
    fail(where, ": \"chosen\" and \"rejected\" share no prompt message (no \"prompt\" given)");
  }
  if (end > 0) row.prompt_msgs = to_messages(c, 0, end, where, "chosen");
  row.chosen_msgs = to_messages(c, end, c.size(), where, "chosen");
  row.rejected_msgs = to_messages(r, end, r.size(), where, "rejected");
  if (row.chosen_msgs.empty() || row.rejected_msgs.empty())
    fail(where, ": \"chosen\" or \"rejected\" has no completion message after the prompt");
  return row;
}

PreferenceIds tokenize_preference(const PreferenceRow& row, const Tokenizer& tok,
                                  const ChatFormat* chat) {
  std::vector<int32_t> p, pc, pr;
  if (!row.conversational) {
    // TRL's add_eos, then tokenizer(text) with its special tokens (BOS for Llama/Mistral).
    auto with_eos = [&](const std::string& s) {
      const std::string eos = tok.eos_text();
      return s.size() >= eos.size() && s.compare(s.size() - eos.size(), eos.size(), eos) == 0
                 ? s
                 : s + eos;
    };
    const bool bos = tok.add_bos_default();
    p = tok.encode(row.prompt, bos);
    pc = tok.encode(row.prompt + with_eos(row.chosen), bos);
    pr = tok.encode(row.prompt + with_eos(row.rejected), bos);
  } else {
    if (!chat) fail("conversational preference rows need a chat template");
    // apply_chat_template(tokenize=True): the rendered text, no special tokens added (the template
    // writes BOS itself).
    auto full = [&](const std::vector<ChatMessage>& completion) {
      std::vector<ChatMessage> m = row.prompt_msgs;
      m.insert(m.end(), completion.begin(), completion.end());
      return tok.encode(chat->render(m, false), false);
    };
    p = tok.encode(chat->render(row.prompt_msgs, true), false);
    pc = full(row.chosen_msgs);
    pr = full(row.rejected_msgs);
  }
  const size_t n = std::min(common_prefix_length(p, pc), common_prefix_length(p, pr));
  PreferenceIds out;
  out.prompt.assign(p.begin(), p.begin() + long(n));
  out.chosen.assign(pc.begin() + long(n), pc.end());
  out.rejected.assign(pr.begin() + long(n), pr.end());
  return out;
}

}  // namespace lamina
