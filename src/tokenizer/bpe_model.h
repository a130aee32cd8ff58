// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): a vocabulary,
// ranked merges, and the options byte-level (GPT-2, Llama 3, Qwen) and SentencePiece-converted
// (Llama 2, Mistral, Gemma: byte_fallback, unk_token) files use. Encodes one pre-tokenized word.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lamina {

class BpeModel {
 public:
  // m: the "model" object; where: the file, for errors.
  static BpeModel from_json(const nlohmann::json& m, const std::string& where);

  // Appends the ids of one word (after normalization and pre-tokenization), as
  // tokenizers' BPE::tokenize: the whole word when ignore_merges and it is in the vocabulary;
  // else one symbol per character (continuing_subword_prefix / end_of_word_suffix added; a
  // character outside the vocabulary as its <0xXX> byte tokens with byte_fallback, else
  // unk_token, consecutive ones fused with fuse_unk, else dropped), merged lowest rank first
  // (leftmost among equal ranks).
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> id(std::string_view piece) const;
  // The piece of id ("" for an id the vocabulary skips).
  const std::string& piece(int32_t id) const;
  int64_t size() const { return int64_t(pieces_.size()); }  // largest id + 1
  // The merges in rank order, as "left right" (GGUF's tokenizer.ggml.merges).
  std::vector<std::string> merges() const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> vocab_;
  std::vector<std::string> pieces_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t byte_ids_[256];  // <0xXX> ids, -1 where absent
  std::optional<int32_t> unk_;
  std::string prefix_, suffix_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
};

}  // namespace lamina
