// How a run turns chat messages into text and tokens: the model's own chat_template rendered by
// the Jinja interpreter (jinja.h) as transformers' apply_chat_template renders it, or one of
// lamina's built-in templates (chat_template.h) when the user names one (--chat-template,
// --template) or the model has none. Generation, chat, eval, DPO and SFT all go through this.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"

namespace lamina {

class Tokenizer;

class ChatFormat {
 public:
  // A built-in template with its special-token texts (and OpenChat's condition).
  static ChatFormat builtin(ChatTemplate t, ChatTokens k);
  // The tokenizer's own chat_template (Error when it has none, or when it does not parse: the
  // error names `where` and the line). `end_texts`: the texts that end an assistant turn (the
  // EOS and generation_config's further EOS ids as text: <|eot_id|>, <|im_end|>,
  // <end_of_turn>), used to find where each trained assistant span stops.
  static ChatFormat own(const Tokenizer& tok, std::vector<std::string> end_texts,
                        const std::string& where);
  // A Jinja template given as text (tokenize --template, template --template).
  static ChatFormat from_text(std::string jinja, const Tokenizer& tok,
                              std::vector<std::string> end_texts, const std::string& where);

  bool is_builtin() const { return builtin_.has_value(); }
  std::optional<ChatTemplate> builtin_kind() const { return builtin_; }
  std::string name() const;  // "openchat" (a built-in) or "the model's chat_template"
  // What decides the rendering (for caches keyed on it): the built-in's name and tokens, or the
  // template's text.
  std::string identity() const;

  // The prompt text; encode it with add_bos = false (the template writes BOS where it has one).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // A Jinja template over all of apply_chat_template's variables (messages with tool calls and
  // reasoning, tools, documents, enable_thinking, ...), filled in as transformers does: the
  // special tokens' text, tools and documents None, add_generation_prompt false, reasoning
  // fields aliased. Error for a built-in template (it renders role and content only).
  // generation_spans: as jinja::render's ({% generation %} blocks' byte ranges).
  std::string render_variables(
      jinja::Value vars, std::vector<std::pair<size_t, size_t>>* generation_spans = nullptr) const;

  // A conversation for training, tokenised whole (the ids the model sees at inference) with each
  // message's span: ids[begin, end) are the tokens of message `message` (an assistant's: its
  // {% generation %} block where the template marks them, as TRL's assistant_only_loss takes
  // them; else from the end of the generation prompt before it through the end-of-turn text after
  // its content; other roles': their content, located in the rendering). Spans are found as TRL
  // finds its completion: the common prefix of the ids of the text up to a boundary and the ids of
  // the whole text.
  struct Span {
    int message;
    size_t begin, end;
  };
  struct Tokenised {
    std::vector<int32_t> ids;
    std::vector<Span> spans;
  };
  // `need_content_span[i]`: locate non-assistant message i's content (it has a loss weight);
  // Error naming `where` when the template does not render the conversation incrementally (the
  // prompt before an assistant message is not a prefix of the whole) or a needed content is not
  // found as written.
  Tokenised tokenise_for_training(const std::vector<ChatMessage>& messages,
                                  const std::vector<bool>& need_content_span, const Tokenizer& tok,
                                  const std::string& where) const;

 private:
  std::optional<ChatTemplate> builtin_;
  ChatTokens tokens_;
  std::string jinja_, where_;
  jinja::Template template_;  // jinja_ parsed
  std::string bos_, eos_;     // the special tokens' text the template sees ("" with none)
  std::vector<std::string> end_texts_;
  bool generation_blocks_ = false;  // the template has {% generation %} marks
};

// The chat format a run uses for a model directory: the built-in `named` (--chat-template,
// --template) if given; else none when the tokenizer has no chat_template; else the model's own,
// except that an OpenChat template with a class condition to apply (`condition`, or lamina's
// generation_config chat_condition, which the Jinja text cannot express) renders with the
// built-in openchat. The built-ins' condition: `condition`, else chat_condition, else
// "GPT4 Correct".
std::optional<ChatFormat> choose_chat_format(const Tokenizer& tok, const std::string& model_dir,
                                             std::optional<ChatTemplate> named,
                                             const std::optional<std::string>& condition);

// transformers' preparation of a conversation before rendering (_alias_reasoning_fields): a
// message with reasoning under any of reasoning_content / thinking / reasoning gets it under
// "thinking" (the first key) and "reasoning_content" too. `vars` holds "messages".
void alias_reasoning_fields(jinja::Value& vars);

// The texts that end an assistant turn for a model directory: the tokenizer's EOS and the
// pieces of generation_config.json's eos_token_id list (<|eot_id|>, <|im_end|>, <end_of_turn>).
std::vector<std::string> end_of_turn_texts(const Tokenizer& tok, const std::string& model_dir);

}  // namespace lamina
