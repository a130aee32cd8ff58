// Chat templates as the models' own Jinja templates render them, written out in C++.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace lamina {

enum class ChatTemplate { Llama2, MistralInstruct, OpenChat, ChatML };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTokens {
  std::string bos = "<s>", eos = "</s>";
  std::string end_of_turn = "<|end_of_turn|>";  // OpenChat
  std::string condition = "GPT4 Correct";       // OpenChat's class condition at inference
};

// Names: llama-2, mistral-instruct, openchat, chatml.
// `option` names the flag in errors (--chat-template, --template).
ChatTemplate parse_chat_template(const std::string& name,
                                 const std::string& option = "--chat-template");
const char* chat_template_name(ChatTemplate t);
// Recognises a model's Jinja chat_template by its markers; nullopt when unknown.
std::optional<ChatTemplate> detect_chat_template(const std::string& jinja);

// Renders messages to text with the special tokens written literally (BOS included where the
// template has it); encode the result with add_bos = false. add_generation_prompt appends the
// assistant's prefix so the model continues as the assistant.
std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt, const ChatTokens& tok = {});

}  // namespace lamina
