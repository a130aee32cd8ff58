// lamina template: the prompt a model's chat template makes of a conversation, as
// apply_chat_template(tokenize=False) prints it: the tool users reach for when a chat model
// answers oddly.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/jinja.h"

namespace lamina {

int cmd_template(int argc, char** argv) {
  Args a(
      "template",
      "Print the prompt a model's chat template renders for a conversation, exactly as\n"
      "transformers' apply_chat_template(tokenize=False) does. --messages FILE holds a JSON\n"
      "list of messages ({\"role\", \"content\"}, tool_calls, reasoning_content ...) or an object\n"
      "of template variables ({\"messages\", \"tools\", \"enable_thinking\", ...}). The model's\n"
      "own Jinja chat_template is used unless --chat-template names a built-in one.",
      {{"model", "DIR", "model (or tokenizer) directory", kRequired},
       {"messages", "FILE", "the conversation: a JSON list of messages, or an object", kRequired},
       {"generation-prompt", "", "append the assistant's prefix (add_generation_prompt)", ""},
       {"chat-template", "NAME",
        "a built-in template instead: llama-2, mistral-instruct, openchat, chatml", ""},
       {"condition", "TEXT", "openchat: the class condition (default: generation_config's)", ""},
       {"ids", "", "print the token ids (one JSON list) after the text", ""}});
  if (!a.parse(argc, argv)) return 0;
  const std::string dir = a.str("model"), file = a.str("messages");
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(read_text_file(file));
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": not JSON: ", e.what());
  }
  if (j.is_array()) j = nlohmann::ordered_json{{"messages", j}};
  if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
    fail(file, ": expected a list of messages or an object with \"messages\"");
  if (a.flag("generation-prompt")) j["add_generation_prompt"] = true;
  const Tokenizer tok = Tokenizer::load(dir);
  std::optional<ChatTemplate> named;
  if (a.given("chat-template")) named = parse_chat_template(a.str("chat-template"));
  std::optional<std::string> condition;
  if (a.given("condition")) condition = a.str("condition");
  auto fmt = choose_chat_format(tok, dir, named, condition);
  if (!fmt) fail(dir, ": the model has no chat_template; pass --chat-template NAME");
  std::string text;
  if (fmt->is_builtin()) {
    // Role and content only: what the built-in templates render.
    std::vector<ChatMessage> msgs;
    size_t n = 0;
    for (auto& m : j["messages"]) {
      ++n;
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string())
        fail(file, ": message ", n, ": a built-in template needs string \"role\" and \"content\"");
      msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    const bool gen = j.value("add_generation_prompt", false);
    text = fmt->render(msgs, gen);
  } else {
    text = fmt->render_variables(jinja::from_json(j));
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (a.flag("ids")) std::printf("\n%s\n", nlohmann::json(tok.encode(text, false)).dump().c_str());
  return 0;
}

}  // namespace lamina
