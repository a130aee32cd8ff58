#include "tokenizer/chat_template.h"

#include "core/error.h"

namespace lamina {

ChatTemplate parse_chat_template(const std::string& name, const std::string& option) {
  if (name == "llama-2" || name == "llama2") return ChatTemplate::Llama2;
  if (name == "mistral-instruct" || name == "mistral") return ChatTemplate::MistralInstruct;
  if (name == "openchat") return ChatTemplate::OpenChat;
  if (name == "chatml") return ChatTemplate::ChatML;
  fail(option, ": unknown template '", name, "' (llama-2, mistral-instruct, openchat, chatml)");
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::Llama2:
      return "llama-2";
    case ChatTemplate::MistralInstruct:
      return "mistral-instruct";
    case ChatTemplate::OpenChat:
      return "openchat";
    case ChatTemplate::ChatML:
      return "chatml";
  }
  return "?";
}

std::optional<ChatTemplate> detect_chat_template(const std::string& j) {
  // Llama 3's headers (openchat-3.6 writes "GPT4 Correct" inside them): no built-in is that.
  if (j.find("<|start_header_id|>") != std::string::npos) return std::nullopt;
  if (j.find("<|im_start|>") != std::string::npos) return ChatTemplate::ChatML;
  if (j.find("GPT4 Correct") != std::string::npos || j.find("<|end_of_turn|>") != std::string::npos)
    return ChatTemplate::OpenChat;
  if (j.find("<<SYS>>") != std::string::npos) return ChatTemplate::Llama2;
  if (j.find("[INST]") != std::string::npos) return ChatTemplate::MistralInstruct;
  return std::nullopt;
}

namespace {

std::string strip(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n\r"), b = s.find_last_not_of(" \t\n\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

void check_role(const ChatMessage& m) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant")
    fail("chat message role '", m.role, "' is not system, user or assistant");
}

}  // namespace

std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& msgs, bool gen,
                        const ChatTokens& k) {
  for (auto& m : msgs) check_role(m);
  std::string system;
  size_t first = 0;
  if (!msgs.empty() && msgs[0].role == "system") system = msgs[0].content, first = 1;
  std::string out;
  switch (t) {
    case ChatTemplate::Llama2:
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
      for (size_t i = first; i < msgs.size(); ++i) {
        std::string c = msgs[i].content;
        if (i == first && !system.empty()) c = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + c;
        if (msgs[i].role == "user")
          out += k.bos + "[INST] " + strip(c) + " [/INST]";
        else
          out += " " + strip(c) + " " + k.eos;
      }
      return out;
    case ChatTemplate::MistralInstruct:
      // <s>[INST] {user} [/INST]{assistant}</s>[INST] ...; a system prompt joins the first user
      // turn.
      out = k.bos;
      for (size_t i = first; i < msgs.size(); ++i) {
        std::string c = msgs[i].content;
        if (i == first && !system.empty()) c = system + "\n\n" + c;
        if (msgs[i].role == "user")
          out += "[INST] " + c + " [/INST]";
        else
          out += c + k.eos;
      }
      return out;
    case ChatTemplate::OpenChat:
      // <s>GPT4 Correct User: {user}<|end_of_turn|>GPT4 Correct Assistant:
      // {assistant}<|end_of_turn|>
      out = k.bos;
      if (!system.empty()) out += system + k.end_of_turn;
      for (size_t i = first; i < msgs.size(); ++i) {
        std::string role = msgs[i].role == "user" ? "User" : "Assistant";
        out += (k.condition.empty() ? "" : k.condition + " ") + role + ": " + msgs[i].content +
               k.end_of_turn;
      }
      if (gen) out += (k.condition.empty() ? "" : k.condition + " ") + "Assistant:";
      return out;
    case ChatTemplate::ChatML:
      for (auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (gen) out += "<|im_start|>assistant\n";
      return out;
  }
  return out;
}

}  // namespace lamina
