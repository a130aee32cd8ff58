// TRL preference rows -> token ids, as TRL 1.16.0's DPOTrainer prepares them (_prepare_dataset):
//   - implicit prompt (no "prompt" key, hh-rlhf style): the prompt is the longest common prefix of
//     chosen and rejected (trl.extract_prompt: characters for text, whole messages for lists);
//   - standard (plain text) rows are used as they are, EOS text appended to each completion unless
//     it already ends with it; prompt and prompt + completion are tokenised as whole strings with
//     the tokenizer's own BOS;
//   - conversational rows (message lists) go through the chat template: the prompt rendered with
//     the generation prompt, prompt + completion rendered whole, both tokenised without added BOS;
//   - the completion starts where the tokenised prompt and prompt + completion first differ
//     (trl.data_utils.common_prefix_length, the shorter of chosen's and rejected's).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_format.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

// One parsed row, before tokenisation. Text rows use prompt/chosen/rejected; conversational rows
// the message lists (content parts already joined to text).
struct PreferenceRow {
  bool conversational = false;
  std::string prompt, chosen, rejected;
  std::vector<ChatMessage> prompt_msgs, chosen_msgs, rejected_msgs;
};

// Parses one JSONL line; throws Error naming `where` (file:line) and the field. Accepted:
//   {"prompt": str, "chosen": str, "rejected": str}                   standard
//   {"chosen": str, "rejected": str}                                  implicit prompt
//   {"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}          conversational
//   {"chosen": [msgs], "rejected": [msgs]}                            implicit prompt
//   {"prompt": str, "chosen": [msgs], "rejected": [msgs]}             UltraFeedback-binarized
//     layout (the lists hold the prompt: it is extracted from them, the string ignored; lists that
//     share no message take the string as the user's message). TRL itself fails on this mix.
// A message's "content" is a string or a list of {"type": "text", "text": ...} parts, joined in
// order as the templates that accept parts render them; other part types are refused by name.
PreferenceRow parse_preference(const std::string& line, const std::string& where);

struct PreferenceIds {
  std::vector<int32_t> prompt;  // the shared prompt (BOS first where the model has one)
  std::vector<int32_t> chosen,
      rejected;  // the completions after it, EOS (or template end) included
};

// Tokenises as TRL 1.16.0; `chat` (the model's own template or a built-in) is needed for
// conversational rows (Error otherwise). Plain rows append the tokenizer's EOS text.
PreferenceIds tokenize_preference(const PreferenceRow& row, const Tokenizer& tok,
                                  const ChatFormat* chat);

}  // namespace lamina
