// Conversation data for SFT and C-RLFT: the JSONL formats people have (OpenChat, OpenAI messages,
// ShareGPT, Alpaca), and their tokenisation into ids with a per-token loss weight.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_format.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

struct Turn {
  std::string role;  // user or assistant
  std::string content;
  std::optional<float> weight;  // per-message weight (OpenChat's "weight"), else the source's
};

struct Conversation {
  std::string system;
  std::vector<Turn> turns;
  std::optional<std::string> condition;  // OpenChat's class condition ("GPT4"), else the source's
  std::optional<float> weight;           // a line-level "weight" (OpenAI-style), else the source's
  std::string source;                    // a line-level "source", informational
};

// One JSONL line in any of the formats (detected by keys):
//   OpenChat  {"items": [{"role", "content", "weight"}], "condition", "system"}
//   OpenAI    {"messages": [{"role", "content"}], "source"?, "weight"?}  (system messages allowed)
//   ShareGPT  {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
//   Alpaca    {"instruction", "input"?, "output"}
// Throws Error naming `where` (file:line) on anything else.
Conversation parse_conversation(const std::string& line, const std::string& where);

struct ConversationFile {
  std::vector<Conversation> conversations;
  int64_t skipped = 0;  // malformed lines skipped (when not strict)
};
// Reads a JSONL file; malformed lines stop with file:line when strict, else are skipped, counted
// and the first few reported on stderr.
ConversationFile read_conversations(const std::string& path, bool strict);

// How conversations become tokens.
struct TemplateOptions {
  ChatTemplate tmpl = ChatTemplate::OpenChat;
  // The model's own chat_template instead of `tmpl` (a ChatFormat::own): the conversation is
  // rendered whole, tokenised whole, and each message's span located in it (ChatFormat::
  // tokenise_for_training); the weights follow the same rules. Not with conditions (C-RLFT).
  const ChatFormat* own = nullptr;
  std::string condition;          // OpenChat: "{condition} {Role}:" prefixes ("" -> "User:")
  float weight = 1.0f;            // default weight of assistant tokens
  bool train_on_prompts = false;  // give user/system content weight too (plain SFT option)
  // ochat's per_sequence_loss (seq_level_weight): a message's weight w becomes w / (its content
  // tokens + its end token), so every message counts w in total whatever its length.
  bool per_message_weight = false;
};

// ids[i] and weights[i]: weights[i] is the loss weight of predicting ids[i] (0 for BOS, system
// text and role prefixes; a message's own weight, whatever its role, for its tokens and end token
// (ochat's rule); else the source's for assistant turns, 0 for user turns).
struct Example {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

// Tokenises segment by segment (prefix, content, end-of-turn), as OpenChat's trainer does, so
// every token's role is known exactly. OpenChat: BOS, then per message "{condition} {Role}:" +
// content + <|end_of_turn|>; ChatML: "<|im_start|>role\n" + content + "<|im_end|>" + "\n";
// llama-2 / mistral-instruct: [INST] blocks with BOS/EOS as their templates. `where` names the
// conversation (file:line) in errors of the model's own template.
Example tokenize_conversation(const Conversation& c, const Tokenizer& tok,
                              const TemplateOptions& opt, const std::string& where = "");

}  // namespace lamina
