// The text stages of a Hugging Face tokenizer.json around its model, read from their JSON:
// normalizer (NFC, Replace, Prepend, ...), pre-tokenizer (Split with a regex, ByteLevel,
// Metaspace, ...), decoder (ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace) and
// post-processor (TemplateProcessing: the BOS/EOS that add_special_tokens puts around a text).
// Each follows the tokenizers library's semantics for the fields real files use; a type it does
// not implement is refused at load with the file and the field named.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lamina {

// A piece of text between pre-tokenization steps. at_start: it begins at offset 0 of the text
// being encoded (Metaspace's prepend_scheme "first" adds its ▁ only there).
struct TextPiece {
  std::string text;
  bool at_start = false;
};

class HfNormalizer {
 public:
  // j: the "normalizer" value (null: none); where: "FILE: normalizer", for errors.
  static HfNormalizer from_json(const nlohmann::json& j, const std::string& where);
  std::string apply(std::string s) const;
  bool empty() const { return steps_.empty(); }
  struct Step;

 private:
  std::vector<std::shared_ptr<const Step>> steps_;
};

class HfPreTokenizer {
 public:
  static HfPreTokenizer from_json(const nlohmann::json& j, const std::string& where);
  // Splits (and rewrites) the pieces in place; empty pieces are dropped.
  void apply(std::vector<TextPiece>& pieces) const;
  struct Step;

 private:
  std::vector<std::shared_ptr<const Step>> steps_;
};

class HfDecoder {
 public:
  static HfDecoder from_json(const nlohmann::json& j, const std::string& where);
  // The tokens' pieces to text (no decoder: joined with spaces, as tokenizers does).
  std::string decode(std::vector<std::string> tokens) const;
  struct Step;

 private:
  std::vector<std::shared_ptr<const Step>> steps_;
  bool none_ = true;
};

class HfPostProcessor {
 public:
  static HfPostProcessor from_json(const nlohmann::json& j, const std::string& where);
  // The ids of one sequence with the special tokens add_special_tokens puts around it.
  std::vector<int32_t> apply(const std::vector<int32_t>& ids) const;
  bool adds_tokens() const { return !prefix_.empty() || !suffix_.empty(); }
  const std::vector<int32_t>& prefix() const { return prefix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;  // the single-sequence template: prefix A suffix
};

}  // namespace lamina
