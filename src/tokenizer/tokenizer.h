// A model directory's tokenizer: SentencePiece (tokenizer.model through libsentencepiece, plus the
// added tokens the directory declares: tokenizer_config.json added_tokens_decoder,
// added_tokens.json, tokenizer.json added_tokens, e.g. OpenChat's <|end_of_turn|>), or, where
// there is no tokenizer.model, Hugging Face's tokenizer.json (hf_tokenizer.h: the byte-level BPE
// of Llama 3.x and Qwen, the byte-fallback BPE of Mistral v0.3 and Gemma).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace lamina {

class HfTokenizer;

class Tokenizer {
 public:
  // Loads DIR/tokenizer.model and the JSON files beside it, else DIR/tokenizer.json.
  static Tokenizer load(const std::string& model_dir);
  // Just a SentencePiece model file (no added tokens).
  static Tokenizer from_sentencepiece(const std::string& path);

  // Text -> ids. Added and special tokens written literally in the text ("<s>", "<|end_of_turn|>")
  // become their ids; the text between them is encoded by SentencePiece segment by segment (each
  // segment gets SentencePiece's dummy prefix, as transformers' legacy Llama tokenizer does).
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;
  // Ids -> text; special tokens (BOS/EOS/control and added tokens marked special) are dropped
  // when skip_special.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;
  // SentencePiece alone, no added-token splitting (the reference the tests compare with); a
  // tokenizer.json: encode without the post-processor's tokens.
  std::vector<int32_t> encode_plain(const std::string& text) const;
  // tokenizer.json (byte-level or byte-fallback BPE) rather than SentencePiece.
  bool is_tokenizer_json() const { return hf_ != nullptr; }
  // tokenizer.json's BPE merges in rank order ("left right"); empty for SentencePiece.
  std::vector<std::string> bpe_merges() const;

  int64_t size() const;                    // SentencePiece pieces + added tokens beyond them
  int32_t bos_id() const { return bos_; }  // -1: the model has none (Qwen)
  int32_t eos_id() const { return eos_; }
  bool add_bos_default() const { return add_bos_; }
  std::optional<int32_t> token_id(const std::string& content) const;
  std::string piece(int32_t id) const;
  const std::string& chat_template() const { return chat_template_; }
  // Every id's piece, score and kind (llama.cpp's token types), for export (GGUF's
  // tokenizer.ggml.tokens/scores/token_type). Added tokens: score 0, Control when special else
  // UserDefined.
  enum class PieceKind : int32_t {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6
  };
  struct Piece {
    std::string text;
    float score = 0;
    PieceKind kind = PieceKind::Normal;
  };
  std::vector<Piece> vocabulary() const;
  std::string bos_text() const { return piece(bos_); }
  std::string eos_text() const { return piece(eos_); }

 private:
  static Tokenizer load_tokenizer_json(const std::string& dir);
  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::shared_ptr<const HfTokenizer> hf_;
  std::map<std::string, int32_t> specials_;  // content -> id, matched literally in text
  std::map<int32_t, std::string> added_;     // ids beyond the SentencePiece vocabulary
  std::map<int32_t, bool> special_flag_;     // added/special id -> skipped when decoding
  int32_t bos_ = 1, eos_ = 2;
  bool add_bos_ = true;
  std::string chat_template_;
};

}  // namespace lamina
