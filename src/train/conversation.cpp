#include "train/conversation.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jsonl.h"

namespace lamina {
using json = nlohmann::json;

namespace {

std::string str_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) fail(where, ": expected a string field \"", key, "\"");
  return it->get<std::string>();
}

std::string normalise_role(const std::string& r, const std::string& where) {
  if (r == "user" || r == "human") return "user";
  if (r == "assistant" || r == "gpt" || r == "bot" || r == "model") return "assistant";
  if (r == "system") return "system";
  fail(where, ": unknown role '", r, "' (user/human, assistant/gpt, system)");
}

void add_turn(Conversation& c, const std::string& role, const std::string& content,
              std::optional<float> w, const std::string& where) {
  if (role == "system") {
    if (!c.turns.empty()) fail(where, ": a system message must come first");
    c.system = content;
    return;
  }
  c.turns.push_back({role, content, w});
}

}  // namespace

Conversation parse_conversation(const std::string& line, const std::string& where) {
  json j = parse_json_line(line, where);
  if (!j.is_object()) fail(where, ": expected a JSON object");
  Conversation c;
  if (j.contains("items")) {  // OpenChat
    if (!j["items"].is_array()) fail(where, ": \"items\" must be a list");
    for (auto& m : j["items"]) {
      if (!m.is_object()) fail(where, ": each item must be an object");
      std::optional<float> w;
      if (m.contains("weight") && !m["weight"].is_null()) {
        if (!m["weight"].is_number()) fail(where, ": item \"weight\" must be a number");
        w = m["weight"].get<float>();
      }
      add_turn(c, normalise_role(str_field(m, "role", where), where),
               str_field(m, "content", where), w, where);
    }
    if (j.contains("condition") && j["condition"].is_string())
      c.condition = j["condition"].get<std::string>();
    if (j.contains("system") && j["system"].is_string()) c.system = j["system"].get<std::string>();
  } else if (j.contains("messages")) {  // OpenAI
    if (!j["messages"].is_array()) fail(where, ": \"messages\" must be a list");
    for (auto& m : j["messages"]) {
      if (!m.is_object()) fail(where, ": each message must be an object");
      std::optional<float> w;
      if (m.contains("weight") && m["weight"].is_number()) w = m["weight"].get<float>();
      add_turn(c, normalise_role(str_field(m, "role", where), where),
               str_field(m, "content", where), w, where);
    }
  } else if (j.contains("conversations")) {  // ShareGPT
    if (!j["conversations"].is_array()) fail(where, ": \"conversations\" must be a list");
    for (auto& m : j["conversations"]) {
      if (!m.is_object()) fail(where, ": each conversation turn must be an object");
      add_turn(c, normalise_role(str_field(m, "from", where), where), str_field(m, "value", where),
               std::nullopt, where);
    }
  } else if (j.contains("instruction")) {  // Alpaca
    std::string prompt = str_field(j, "instruction", where);
    if (j.contains("input") && j["input"].is_string() && !j["input"].get<std::string>().empty())
      prompt += "\n\n" + j["input"].get<std::string>();
    c.turns.push_back({"user", prompt, std::nullopt});
    c.turns.push_back({"assistant", str_field(j, "output", where), std::nullopt});
  } else {
    fail(where,
         ": not a conversation (expected \"items\", \"messages\", \"conversations\" or "
         "\"instruction\")");
  }
  if (j.contains("weight") && j["weight"].is_number()) c.weight = j["weight"].get<float>();
  if (j.contains("source") && j["source"].is_string()) c.source = j["source"].get<std::string>();
  if (c.turns.empty()) fail(where, ": conversation has no turns");
  bool has_assistant = false;
  for (auto& t : c.turns) has_assistant |= t.role == "assistant";
  if (!has_assistant) fail(where, ": conversation has no assistant turn to learn from");
  return c;
}

ConversationFile read_conversations(const std::string& path, bool strict) {
  ConversationFile out;
  SkippedLines skips;
  for_each_jsonl_line(path, [&](const std::string& line, int64_t n) {
    try {
      out.conversations.push_back(parse_conversation(line, path + ":" + std::to_string(n)));
    } catch (const Error& e) {
      if (strict) throw;
      skips.add(e.what());
    }
  });
  if (out.conversations.empty()) skips.fail_none_usable(path, "conversation");
  skips.print_warnings();
  out.skipped = skips.count();
  return out;
}

namespace {

// The model's own template: spans located in the whole rendering, weighted as below.
Example tokenize_with_own_template(const Conversation& c, const Tokenizer& tok,
                                   const TemplateOptions& o, const std::string& where) {
  const float prompt_w = o.train_on_prompts ? o.weight : 0.0f;
  std::vector<ChatMessage> msgs;
  std::vector<float> w;
  if (!c.system.empty()) msgs.push_back({"system", c.system}), w.push_back(prompt_w);
  for (auto& t : c.turns)
    msgs.push_back({t.role, t.content}),
        w.push_back(t.weight.value_or(t.role == "assistant" ? o.weight : prompt_w));
  std::vector<bool> need(msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) need[i] = w[i] != 0;
  auto r = o.own->tokenise_for_training(msgs, need, tok, where);
  Example ex;
  ex.ids = std::move(r.ids);
  ex.weights.assign(ex.ids.size(), 0.0f);
  for (auto& s : r.spans) {
    float wt = w[size_t(s.message)];
    if (o.per_message_weight && wt != 0 && s.end > s.begin) wt /= float(s.end - s.begin);
    for (size_t k = s.begin; k < s.end; ++k) ex.weights[k] = wt;
  }
  if (!ex.weights.empty()) ex.weights[0] = 0.0f;
  return ex;
}

}  // namespace

Example tokenize_conversation(const Conversation& c, const Tokenizer& tok, const TemplateOptions& o,
                              const std::string& where) {
  if (o.own) return tokenize_with_own_template(c, tok, o, where);
  Example ex;
  auto put = [&](const std::vector<int32_t>& ids, float w) {
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.weights.insert(ex.weights.end(), ids.size(), w);
  };
  // A message: its content and end token(s) with its weight (spread over them with
  // per_message_weight).
  auto message = [&](const std::vector<int32_t>& content, const std::vector<int32_t>& end,
                     float w) {
    if (o.per_message_weight && w != 0) w /= float(content.size() + end.size());
    put(content, w);
    put(end, w);
  };
  auto special = [&](const std::string& s) {
    auto id = tok.token_id(s);
    if (!id)
      fail("the tokenizer has no token '", s, "' that the ", chat_template_name(o.tmpl),
           " template needs");
    return std::vector<int32_t>{*id};
  };
  // BOS for the templates that start with one (a tokenizer.json model may have none: Qwen).
  auto bos = [&] {
    if (tok.bos_id() < 0)
      fail("the tokenizer has no BOS token, which the ", chat_template_name(o.tmpl),
           " template needs");
    return std::vector<int32_t>{tok.bos_id()};
  };
  const float prompt_w = o.train_on_prompts ? o.weight : 0.0f;
  // A message's own weight counts whatever its role, as in ochat's tokenize_conversations (every
  // item carries a weight; its content and end-of-turn token get it, the role prefix 0): a user
  // item with "weight": 1 is learnt. Without one, assistant turns take the source's weight and
  // user turns prompt_w.
  auto weight_of = [&](const Turn& t) {
    return t.weight.value_or(t.role == "assistant" ? o.weight : prompt_w);
  };
  switch (o.tmpl) {
    case ChatTemplate::OpenChat: {
      const std::string cond = c.condition.value_or(o.condition);
      const auto eot = special("<|end_of_turn|>");
      put(bos(), 0.0f);
      if (!c.system.empty()) {
        put(tok.encode(c.system, false), prompt_w);
        put(eot, prompt_w);
      }
      for (auto& t : c.turns) {
        const std::string role = t.role == "user" ? "User:" : "Assistant:";
        put(tok.encode(cond.empty() ? role : cond + " " + role, false), 0.0f);
        message(tok.encode(t.content, false), eot, weight_of(t));
      }
      break;
    }
    case ChatTemplate::ChatML: {
      const auto start = special("<|im_start|>"), end = special("<|im_end|>");
      auto block = [&](const std::string& role, const std::string& content, float w) {
        put(start, 0.0f);
        put(tok.encode(role + "\n", false), 0.0f);
        message(tok.encode(content, false), end, w);
        put(tok.encode("\n", false), 0.0f);
      };
      if (!c.system.empty()) block("system", c.system, prompt_w);
      for (auto& t : c.turns) block(t.role, t.content, weight_of(t));
      break;
    }
    case ChatTemplate::Llama2:
    case ChatTemplate::MistralInstruct: {
      const bool l2 = o.tmpl == ChatTemplate::Llama2;
      bool first = true;
      if (!l2) put(bos(), 0.0f);
      for (auto& t : c.turns) {
        if (t.role == "user") {
          std::string content = t.content;
          if (first && !c.system.empty())
            content = l2 ? "<<SYS>>\n" + c.system + "\n<</SYS>>\n\n" + content
                         : c.system + "\n\n" + content;
          if (l2) put(bos(), 0.0f);
          put(tok.encode("[INST]", false), 0.0f);
          put(tok.encode(content, false), prompt_w);
          put(tok.encode("[/INST]", false), 0.0f);
        } else {
          message(tok.encode(t.content, false), {tok.eos_id()}, weight_of(t));
        }
        first = false;
      }
      break;
    }
  }
  // The first token is never a target (nothing precedes it).
  if (!ex.weights.empty()) ex.weights[0] = 0.0f;
  return ex;
}

}  // namespace lamina
