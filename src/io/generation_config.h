// generation_config.json: what a model directory says about generating with it. Every command that
// generates or builds chat prompts (generate, chat, eval, dpo) reads it here, so they agree on when
// a reply ends and which OpenChat condition the model is prompted with.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lamina {

struct GenerationConfig {
  // eos_token_id (an int or a list): e.g. [2, 32000] after OpenChat SFT, where
  // <|end_of_turn|> ends a reply but config.json's eos_token_id stays </s>.
  std::vector<int32_t> eos_token_ids;
  // lamina's key: the OpenChat class condition to prompt with ("GPT4 Correct", C-RLFT's best).
  std::optional<std::string> chat_condition;
};

// MODEL_DIR/generation_config.json; empty when the file is absent; a malformed file fails naming
// the file and the field.
GenerationConfig read_generation_config(const std::string& model_dir);

}  // namespace lamina
