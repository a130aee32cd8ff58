// A Hugging Face tokenizer.json (the "fast" tokenizer of Llama 3.x, Qwen2.5 / Qwen3, Mistral
// v0.3 / Nemo, Gemma 2 / 3): added tokens split out first (leftmost-longest, with their lstrip /
// rstrip / single_word / normalized flags), then the normalizer, the pre-tokenizer and the BPE
// model on the text between them; the post-processor's special tokens when asked; the decoder
// back to text. The same ids as the tokenizers library (tests/oracles/test_tokenizers.py).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe_model.h"
#include "tokenizer/hf_pipeline.h"

namespace lamina {

class HfTokenizer {
 public:
  struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
    // What decoding gives the decoder: the normalized content for a normalized token (as the
    // tokenizers library's simple_id_to_token), else the content.
    std::string decode_form;
  };

  // Reads and checks the whole file before returning (errors name the file and the field).
  static std::shared_ptr<const HfTokenizer> load(const std::string& path);

  // add_special: the post-processor's tokens (transformers' add_special_tokens=True).
  std::vector<int32_t> encode(const std::string& text, bool add_special) const;
  // The decoder over the tokens' pieces; special added tokens dropped when skip_special.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;
  // The pieces of ids (added tokens by content) as the model's vocabulary spells them.
  std::vector<std::string> pieces(const std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_id(const std::string& content) const;
  std::string piece(int32_t id) const;
  bool is_special(int32_t id) const;
  bool is_added(int32_t id) const { return added_by_id_.count(id) != 0; }
  bool has_id(int32_t id) const { return is_added(id) || !model_.piece(id).empty(); }
  int64_t size() const { return size_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  std::vector<std::string> merges() const { return model_.merges(); }
  const HfPostProcessor& post_processor() const { return post_; }
  const std::string& path() const { return path_; }

 private:
  // A byte trie over added tokens' contents (raw or normalized), for leftmost-longest matching.
  struct Trie {
    struct Node {
      std::map<unsigned char, int32_t> next;
      int32_t token = -1;  // index into added_ of the token ending here
    };
    std::vector<Node> nodes{Node{}};
    void insert(const std::string& s, int32_t token);
    // The longest token starting at s[i]: (index into added_, length), or (-1, 0).
    std::pair<int32_t, size_t> longest(const std::string& s, size_t i) const;
  };
  struct Split {
    std::string text;
    int32_t added = -1;  // index into added_, or -1 for text
    bool at_start = false;
  };
  void split_added(const std::string& s, const Trie& trie, bool at_start,
                   std::vector<Split>& out) const;

  std::string path_;
  BpeModel model_;
  HfNormalizer normalizer_;
  HfPreTokenizer pre_;
  HfDecoder decoder_;
  HfPostProcessor post_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  Trie raw_trie_, normalized_trie_;
  bool has_raw_ = false, has_normalized_ = false;
  int64_t size_ = 0;
};

}  // namespace lamina
