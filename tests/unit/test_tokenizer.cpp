#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <fstream>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/default_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"

using namespace lamina;
using lamina::test::TempDir;

namespace {

std::string llama2_model() {
  std::string p = test::assets_dir() + "/tokenizers/llama2/tokenizer.model";
  if (!file_exists(p)) ADD_FAILURE() << "missing test asset " << p;
  return p;
}

// A model directory with the real Llama 2 tokenizer plus OpenChat's added tokens.
std::string openchat_like_dir(const TempDir& d) {
  TokenizerFiles tf;
  tf.sentencepiece_model = llama2_model();
  tf.added_tokens = {"<|end_of_turn|>", "<|pad_0|>"};
  tf.eos = "<|end_of_turn|>";
  tf.chat_template = jinja_chat_template("openchat");
  EXPECT_EQ(write_tokenizer_files(d.path, tf), 32002);
  return d.path;
}

}  // namespace

TEST(Tokenizer, MatchesLibSentencePieceOnPlainText) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(llama2_model()).ok());
  Tokenizer t = Tokenizer::from_sentencepiece(llama2_model());
  for (std::string text : {"Hello world", "  leading spaces and\ttabs\n", "naïve café — 東京 😀",
                           "1234567 + 89 = ?", "The quick brown fox jumps over the lazy dog."}) {
    std::vector<int> want;
    sp.Encode(text, &want);
    auto got = t.encode(text, false);
    EXPECT_EQ(std::vector<int>(got.begin(), got.end()), want) << text;
    EXPECT_EQ(t.decode(got), sp.DecodeIds(want)) << text;
  }
}

TEST(Tokenizer, KnownLlama2Ids) {
  Tokenizer t = Tokenizer::from_sentencepiece(llama2_model());
  EXPECT_EQ(t.size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  // Byte fallback: U+1F600 is F0 9F 98 80, ids 3 + byte.
  EXPECT_EQ(t.encode("😀", false), (std::vector<int32_t>{29871, 243, 162, 155, 131}));
  EXPECT_EQ(t.decode({243, 162, 155, 131}), "😀");
}

TEST(Tokenizer, Llama2ChatTemplateIds) {
  Tokenizer t = Tokenizer::from_sentencepiece(llama2_model());
  auto ids = t.encode(render_chat(ChatTemplate::Llama2, {{"user", "Hi"}}, true), false);
  // <s> ▁[ INST ] ▁Hi ▁[ / INST ]
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962}));
}

TEST(Tokenizer, AddedTokensFromTokenizerConfig) {
  TempDir d;
  Tokenizer t = Tokenizer::load(openchat_like_dir(d));
  EXPECT_EQ(t.size(), 32002);
  EXPECT_EQ(t.eos_id(), 32000);
  EXPECT_EQ(t.token_id("<|end_of_turn|>"), 32000);
  EXPECT_EQ(t.token_id("<|pad_0|>"), 32001);
  auto tmpl = detect_chat_template(t.chat_template());
  ASSERT_TRUE(tmpl.has_value());
  EXPECT_EQ(*tmpl, ChatTemplate::OpenChat);
  auto ids = t.encode(render_chat(*tmpl, {{"user", "Hi"}}, true), false);
  // <s> ▁G PT 4 ▁Correct ▁User : ▁Hi <|end_of_turn|> ▁G PT 4 ▁Correct ▁Ass istant :
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 402, 7982, 29946, 28518, 4911, 29901, 6324, 32000, 402,
                                       7982, 29946, 28518, 4007, 22137, 29901}));
  EXPECT_EQ(t.decode(ids, false), "<s>GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant:");
  EXPECT_EQ(t.decode(ids, true), "GPT4 Correct User: HiGPT4 Correct Assistant:");
}

TEST(Tokenizer, AddedTokensJsonAndTokenizerJson) {
  TempDir d;
  copy_file(llama2_model(), d / "tokenizer.model");
  std::ofstream(d / "added_tokens.json") << R"({"<|im_start|>": 32000})";
  std::ofstream(d / "tokenizer.json")
      << R"({"added_tokens": [{"id": 32001, "content": "<|im_end|>", "special": true}]})";
  Tokenizer t = Tokenizer::load(d.path);
  EXPECT_EQ(t.size(), 32002);
  EXPECT_EQ(t.encode("<|im_start|>user<|im_end|>", false),
            (std::vector<int32_t>{32000, 1404, 32001}));
}

TEST(Tokenizer, BadTokenizerFilesAreNamed) {
  TempDir d;
  try {
    Tokenizer::load(d.path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  ": no tokenizer (neither a SentencePiece tokenizer.model nor a tokenizer.json)"),
              std::string::npos)
        << e.what();
  }
  copy_file(llama2_model(), d / "tokenizer.model");
  std::ofstream(d / "added_tokens.json") << R"({"<|x|>": 32005})";
  EXPECT_THROW(Tokenizer::load(d.path), Error);  // gap after 32000
  std::ofstream(d / "added_tokens.json") << R"({"<s>": 7})";
  EXPECT_THROW(Tokenizer::load(d.path), Error);  // claims an id that is another piece
  std::ofstream(d / "added_tokens.json") << "{oops";
  EXPECT_THROW(Tokenizer::load(d.path), Error);
}

TEST(Tokenizer, DefaultTokenizerTrainsDeterministically) {
  TempDir d;
  train_default_tokenizer(d / "a.model", 400);
  train_default_tokenizer(d / "b.model", 400);
  // The files embed their own path, so compare the vocabularies.
  Tokenizer t = Tokenizer::from_sentencepiece(d / "a.model"),
            u = Tokenizer::from_sentencepiece(d / "b.model");
  ASSERT_EQ(t.size(), u.size());
  for (int32_t i = 0; i < int32_t(t.size()); ++i) ASSERT_EQ(t.piece(i), u.piece(i));
  EXPECT_LE(t.size(), 400);
  EXPECT_GT(t.size(), 259);  // specials + 256 byte pieces + merges
  std::string text = "The river runs past the mill. 😀";
  EXPECT_EQ(t.decode(t.encode(text, true)), text);
}
