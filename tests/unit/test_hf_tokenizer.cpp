// tokenizer.json pieces on hand-made files whose ids are worked out by hand (the real files are
// checked against the tokenizers library in tests/oracles/test_tokenizers.py), and the errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/split_regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_text.h"

using namespace lamina;
using lamina::test::TempDir;
using json = nlohmann::json;

namespace {

// A byte-level BPE over "a", "b", "Ġ" with merges a+a (rank 0), aa+a (1), Ġ+b (2).
json tiny_bpe() {
  return json::parse(R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "aa": 3, "aaa": 4, "Ġb": 5,
                                        "<0x63>": 6, "<unk>": 7},
              "merges": ["a a", ["aa", "a"], "Ġ b"], "unk_token": "<unk>", "fuse_unk": true,
              "byte_fallback": true},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [8], "tokens": ["<s>"]}}},
    "added_tokens": [{"id": 8, "content": "<s>", "special": true, "normalized": false},
                     {"id": 9, "content": "<x>", "special": false, "normalized": false,
                      "lstrip": true}]
  })");
}

std::string write(const TempDir& d, const json& j) {
  std::ofstream(d / "tokenizer.json") << j.dump();
  return d / "tokenizer.json";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HfTokenizer, MergesLowestRankFirstLeftmostAmongEqual) {
  TempDir d;
  auto t = HfTokenizer::load(write(d, tiny_bpe()));
  // "aaaa": a+a at 0 and 2 (rank 0, leftmost first) -> aa aa; no merge aa+aa -> [3, 3].
  EXPECT_EQ(t->encode("aaaa", false), (std::vector<int32_t>{3, 3}));
  // "aaa": a+a at 0 -> aa a -> aa+a -> aaa.
  EXPECT_EQ(t->encode("aaa", false), (std::vector<int32_t>{4}));
  // " b" is one pre-token "Ġb" (merge rank 2); the template's <s> first with special tokens.
  EXPECT_EQ(t->encode("a b", true), (std::vector<int32_t>{8, 0, 5}));
  EXPECT_EQ(t->decode({8, 0, 5}, true), "a b");
  EXPECT_EQ(t->decode({8, 0, 5}, false), "<s>a b");
}

TEST(HfTokenizer, ByteFallbackUnknownsAndAddedTokens) {
  TempDir d;
  auto t = HfTokenizer::load(write(d, tiny_bpe()));
  // 'c' is absent but its byte token <0x63> exists; 'd' and 'e' are unknown and fused into one.
  EXPECT_EQ(t->encode("c", false), (std::vector<int32_t>{6}));
  EXPECT_EQ(t->encode("de", false), (std::vector<int32_t>{7}));
  // <x> takes the spaces on its left (lstrip); <s> is matched in running text.
  EXPECT_EQ(t->encode("a  <x>a<s>", false), (std::vector<int32_t>{0, 9, 0, 8}));
}

TEST(HfTokenizer, LossyUtf8AsRust) {
  EXPECT_EQ(utf8_lossy("a\xff"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(utf8_lossy("\xe4\xbd"), "\xEF\xBF\xBD");  // a cut 3-byte character: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(utf8_lossy("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

TEST(HfTokenizer, RegexClassesAsOniguruma) {
  // U+180E is not white space for Oniguruma; PCRE2's \s would take it.
  SplitRegex re("\\s+", "test");
  EXPECT_TRUE(re.find_all("a\xe1\xa0\x8e"
                          "b")
                  .empty());
  EXPECT_EQ(re.find_all("a \xe3\x80\x80"
                        "b")
                .size(),
            1u);  // space + U+3000
  // \w takes combining marks (Oniguruma), which PCRE2's \w would not.
  SplitRegex w("\\w+", "test");
  EXPECT_EQ(w.find_all("e\xcc\x81x").size(), 1u);
  EXPECT_EQ(onig_compatible_pattern("[^\\s\\p{L}]").find("\\s"), std::string::npos);
}

TEST(HfTokenizer, TokenizerLoadsATokenizerJsonDirectory) {
  TempDir d;
  write(d, tiny_bpe());
  std::ofstream(d / "tokenizer_config.json") << R"({"eos_token": "<x>"})";
  Tokenizer t = Tokenizer::load(d.path);
  EXPECT_TRUE(t.is_tokenizer_json());
  EXPECT_EQ(t.bos_id(), 8);
  EXPECT_EQ(t.eos_id(), 9);
  EXPECT_TRUE(t.add_bos_default());
  EXPECT_EQ(t.size(), 10);
  EXPECT_EQ(t.encode("aaa", true), (std::vector<int32_t>{8, 4}));
}

TEST(HfTokenizer, BadFilesAreNamedWithTheField) {
  TempDir d;
  json j = tiny_bpe();
  j["model"]["type"] = "WordPiece";
  EXPECT_NE(error_of([&] { HfTokenizer::load(write(d, j)); }).find("model.type must be \"BPE\""),
            std::string::npos);
  j = tiny_bpe();
  j["model"]["merges"].push_back("a zz");
  EXPECT_NE(error_of([&] { HfTokenizer::load(write(d, j)); }).find("model.merges[3]"),
            std::string::npos);
  j = tiny_bpe();
  j["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "x"}};
  const std::string e = error_of([&] { HfTokenizer::load(write(d, j)); });
  EXPECT_NE(e.find("tokenizer.json: normalizer: normalizer type 'Precompiled' is not supported"),
            std::string::npos)
      << e;
  j = tiny_bpe();
  j["added_tokens"][1].erase("content");
  EXPECT_NE(error_of([&] { HfTokenizer::load(write(d, j)); }).find("added_tokens[1]"),
            std::string::npos);
}

TEST(HfTokenizer, ChatTemplateListFormAndJinjaFile) {
  TempDir d;
  write(d, tiny_bpe());
  std::ofstream(d / "tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"},
                               {"name": "default", "template": "D"}]})";
  EXPECT_EQ(Tokenizer::load(d.path).chat_template(), "D");
  std::ofstream(d / "chat_template.jinja") << "J{{ x }}";  // the file wins, as in transformers
  EXPECT_EQ(Tokenizer::load(d.path).chat_template(), "J{{ x }}");
  std::filesystem::remove(d / "chat_template.jinja");
  std::ofstream(d / "tokenizer_config.json") << R"({"chat_template": [{"name": 1}]})";
  EXPECT_NE(error_of([&] { Tokenizer::load(d.path); }).find("chat_template[0] must be"),
            std::string::npos);
}
