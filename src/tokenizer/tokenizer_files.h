// Writing the tokenizer files of a HF model directory (tokenizer.model, tokenizer_config.json,
// special_tokens_map.json) that transformers' LlamaTokenizer and lamina both read.
#pragma once
#include <string>
#include <vector>

namespace lamina {

struct TokenizerFiles {
  std::string sentencepiece_model;        // path of the tokenizer.model to copy
  std::vector<std::string> added_tokens;  // appended after the SentencePiece ids, in order
  std::string chat_template;              // Jinja text, may be empty
  std::string bos = "<s>", eos = "</s>", unk = "<unk>";
  int max_length = 4096;
};

// Copies the tokenizer and generation files a model directory may have (tokenizer.model,
// tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
// generation_config.json) from one directory to another.
void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

// Returns the resulting vocabulary size (pieces + added tokens).
int64_t write_tokenizer_files(const std::string& dir, const TokenizerFiles& t);
// The Jinja chat_template transformers ships for each named template (so other tools render
// the same prompt lamina does).
std::string jinja_chat_template(const std::string& name);

}  // namespace lamina
