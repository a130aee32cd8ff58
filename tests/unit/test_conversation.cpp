// Conversation formats and their token weights, against hand-checked Llama 2 ids.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "test_util.h"
#include "tokenizer/tokenizer_files.h"
#include "train/conversation.h"

using namespace lamina;
using lamina::test::TempDir;

namespace {

// The Llama 2 SentencePiece model with its own Jinja chat_template (and added tokens).
Tokenizer llama2_with_template(const TempDir& d, const std::string& tmpl,
                               std::vector<std::string> added = {}) {
  TokenizerFiles tf;
  tf.sentencepiece_model = test::assets_dir() + "/tokenizers/llama2/tokenizer.model";
  tf.added_tokens = std::move(added);
  tf.chat_template = tmpl;
  write_tokenizer_files(d.path, tf);
  return Tokenizer::load(d.path);
}

// Hi / Hello! / Bye / Ciao.: two user turns and two replies.
std::vector<Turn> two_turns() {
  return {{"user", "Hi", {}},
          {"assistant", "Hello!", {}},
          {"user", "Bye", {}},
          {"assistant", "Ciao.", {}}};
}

// The text of the tokens an example learns (weight > 0), special tokens kept.
std::string learnt_text(const Example& ex, const Tokenizer& tok) {
  std::vector<int32_t> learnt;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.weights[i] > 0) learnt.push_back(ex.ids[i]);
  return tok.decode(learnt, false);
}

Tokenizer llama2_with(const TempDir& d, std::vector<std::string> added) {
  TokenizerFiles tf;
  tf.sentencepiece_model = test::assets_dir() + "/tokenizers/llama2/tokenizer.model";
  tf.added_tokens = std::move(added);
  write_tokenizer_files(d.path, tf);
  return Tokenizer::load(d.path);
}

}  // namespace

TEST(Conversation, ParsesEveryFormat) {
  auto oc = parse_conversation(
      R"({"items": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "weight": 0.5}], "condition": "GPT4", "system": "S"})",
      "f:1");
  EXPECT_EQ(oc.turns.size(), 2u);
  EXPECT_EQ(*oc.condition, "GPT4");
  EXPECT_EQ(oc.system, "S");
  EXPECT_FLOAT_EQ(*oc.turns[1].weight, 0.5f);
  auto oa = parse_conversation(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "source": "gpt35", "weight": 0.1})",
      "f:2");
  EXPECT_EQ(oa.system, "S");
  EXPECT_EQ(oa.turns.size(), 2u);
  EXPECT_FLOAT_EQ(*oa.weight, 0.1f);
  EXPECT_EQ(oa.source, "gpt35");
  auto sg = parse_conversation(
      R"({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})",
      "f:3");
  EXPECT_EQ(sg.turns[0].role, "user");
  EXPECT_EQ(sg.turns[1].role, "assistant");
  auto al =
      parse_conversation(R"({"instruction": "Add", "input": "2 and 2", "output": "4"})", "f:4");
  EXPECT_EQ(al.turns[0].content, "Add\n\n2 and 2");
  EXPECT_EQ(al.turns[1].content, "4");
}

TEST(Conversation, MalformedLinesNameFileAndLine) {
  auto err = [](const std::string& line) {
    try {
      parse_conversation(line, "data.jsonl:7");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("{oops").find("data.jsonl:7: malformed JSON"), std::string::npos);
  EXPECT_NE(err(R"({"text": "x"})").find("not a conversation"), std::string::npos);
  EXPECT_NE(
      err(R"({"messages": [{"role": "robot", "content": "x"}]})").find("unknown role 'robot'"),
      std::string::npos);
  EXPECT_NE(err(R"({"messages": [{"role": "user", "content": "x"}]})").find("no assistant turn"),
            std::string::npos);
  TempDir d;
  std::ofstream(d / "c.jsonl") << R"({"instruction": "a", "output": "b"})"
                               << "\n{bad\n"
                               << R"({"instruction": "c", "output": "d"})"
                               << "\n";
  auto f = read_conversations(d / "c.jsonl", false);
  EXPECT_EQ(f.conversations.size(), 2u);
  EXPECT_EQ(f.skipped, 1);
  try {
    read_conversations(d / "c.jsonl", true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:2"), std::string::npos);
  }
}

TEST(Conversation, OpenChatConditionedWeights) {
  TempDir d;
  Tokenizer tok = llama2_with(d, {"<|end_of_turn|>"});
  Conversation c;
  c.system = "Be brief.";
  c.turns = {{"user", "Hi", {}},
             {"assistant", "Hello!", {}},
             {"user", "What is 2+2?", {}},
             {"assistant", "4", 1.0f}};
  TemplateOptions o;
  o.tmpl = ChatTemplate::OpenChat;
  o.condition = "GPT4";
  o.weight = 0.1f;  // a GPT-3.5 source; the last message overrides with its own weight
  Example ex = tokenize_conversation(c, tok, o);
  const int E = 32000;
  std::vector<int32_t> ids = {
      1,   1522, 11473, 29889, E,                              // <s> Be brief. eot
      402, 7982, 29946, 4911,  29901, 6324,  E,                // GPT4 User: Hi eot
      402, 7982, 29946, 4007,  22137, 29901, 15043, 29991, E,  // GPT4 Assistant: Hello! eot
      402, 7982, 29946, 4911,  29901, 1724,  338,   29871, 29906, 29974, 29906, 29973,
      E,   402,  7982,  29946, 4007,  22137, 29901, 29871, 29946, E};  // GPT4 Assistant: 4 eot
  std::vector<float> w = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.1f, 0.1f, 0.1f, 0,
                          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,    1,    1};
  EXPECT_EQ(ex.ids, ids);
  EXPECT_EQ(ex.weights, w);
  // Inference condition with the same tokens as render_chat + encode for the prompt part.
  o.condition = "GPT4 Correct";
  Conversation q;
  q.turns = {{"user", "Hi", {}}, {"assistant", "Hello!", {}}};
  Example e2 = tokenize_conversation(q, tok, o);
  auto rendered = tok.encode(
      render_chat(ChatTemplate::OpenChat, {{"user", "Hi"}, {"assistant", "Hello!"}}, false), false);
  EXPECT_EQ(e2.ids, rendered);
}

// ochat's tokenize_conversations: every item's own weight counts, a user item's too (its content
// and end-of-turn token; the role prefix stays 0); a row without a condition gets "User:".
TEST(Conversation, OpenChatUserWeightsAsOchat) {
  TempDir d;
  Tokenizer tok = llama2_with(d, {"<|end_of_turn|>"});
  Conversation c;
  c.turns = {{"user", "Hi", 0.5f}, {"assistant", "4", {}}};
  TemplateOptions o;
  o.tmpl = ChatTemplate::OpenChat;
  Example ex = tokenize_conversation(c, tok, o);
  const int E = 32000;
  std::vector<int32_t> ids = {1,    4911,  29901, 6324,  E,          // <s> User: Hi eot
                              4007, 22137, 29901, 29871, 29946, E};  // Assistant: 4 eot
  std::vector<float> w = {0, 0, 0, 0.5f, 0.5f, 0, 0, 0, 1, 1, 1};
  EXPECT_EQ(ex.ids, ids);
  EXPECT_EQ(ex.weights, w);
  // per_sequence_loss (seq_level_weight): w / (content + eot tokens) per message, so each message
  // sums to its weight (a 0.1 source keeps counting a tenth, unlike a per-conversation mean).
  o.per_message_weight = true;
  o.weight = 0.1f;
  Example sl = tokenize_conversation(c, tok, o);
  std::vector<float> ws = {0, 0, 0, 0.25f, 0.25f, 0, 0, 0, 0.1f / 3, 0.1f / 3, 0.1f / 3};
  EXPECT_EQ(sl.ids, ids);
  ASSERT_EQ(sl.weights.size(), ws.size());
  for (size_t i = 0; i < ws.size(); ++i) EXPECT_FLOAT_EQ(sl.weights[i], ws[i]) << i;
}

TEST(Conversation, ChatMLAndPromptTraining) {
  TempDir d;
  Tokenizer tok = llama2_with(d, {"<|im_start|>", "<|im_end|>"});
  Conversation c;
  c.turns = {{"user", "Hi", {}}, {"assistant", "Hello!", {}}};
  TemplateOptions o;
  o.tmpl = ChatTemplate::ChatML;
  Example ex = tokenize_conversation(c, tok, o);
  std::vector<int32_t> ids = {32000, 1404, 13,    6324,  32001, 29871, 13, 32000,
                              20255, 13,   15043, 29991, 32001, 29871, 13};
  std::vector<float> w = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0};
  EXPECT_EQ(ex.ids, ids);
  EXPECT_EQ(ex.weights, w);
  o.train_on_prompts = true;
  Example all = tokenize_conversation(c, tok, o);
  EXPECT_EQ(all.weights[3], 1.0f);  // "Hi" now trained on
  EXPECT_EQ(all.weights[1], 0.0f);  // role prefixes never
  EXPECT_EQ(all.weights[0], 0.0f);  // the first token is never a target
}

TEST(Conversation, MissingTemplateTokenIsAnError) {
  TempDir d;
  Tokenizer tok = llama2_with(d, {});
  Conversation c;
  c.turns = {{"user", "Hi", {}}, {"assistant", "Yo", {}}};
  TemplateOptions o;
  EXPECT_THROW(tokenize_conversation(c, tok, o), Error);  // no <|end_of_turn|>
}

TEST(Conversation, ModelsOwnTemplateTokenisedWhole) {
  // The model's own Jinja template (here ChatML's text): the rendering is tokenised whole, and
  // the assistant's reply through its end-of-turn token is what is learnt.
  TempDir d;
  Tokenizer tok =
      llama2_with_template(d, jinja_chat_template("chatml"), {"<|im_start|>", "<|im_end|>"});
  ChatFormat own = ChatFormat::own(tok, {"<|im_end|>"}, d.path + ": chat_template");
  Conversation c;
  c.system = "Be brief.";
  c.turns = two_turns();
  TemplateOptions o;
  o.own = &own;
  Example ex = tokenize_conversation(c, tok, o, "test");
  const std::string text = own.render({{"system", "Be brief."},
                                       {"user", "Hi"},
                                       {"assistant", "Hello!"},
                                       {"user", "Bye"},
                                       {"assistant", "Ciao."}},
                                      false);
  EXPECT_EQ(ex.ids, tok.encode(text, false));
  EXPECT_EQ(learnt_text(ex, tok), "Hello!<|im_end|>Ciao.<|im_end|>");
  // --train-on-prompts: the user's and the system's contents too, never the role headers.
  o.train_on_prompts = true;
  Example all = tokenize_conversation(c, tok, o, "test");
  EXPECT_EQ(learnt_text(all, tok), "Be brief.HiHello!<|im_end|>ByeCiao.<|im_end|>");
}

TEST(Conversation, TemplateThatRendersPromptsDifferentlyIsRefused) {
  TempDir d;
  // The last message is marked, so the prompt before a reply is not where the whole begins.
  Tokenizer tok = llama2_with_template(
      d,
      "{% for m in messages %}{{ m.content }}{% if loop.last %}!{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}>{% endif %}");
  ChatFormat own = ChatFormat::own(tok, {}, "t");
  Conversation c;
  c.turns = {{"user", "Hi", {}}, {"assistant", "Yo", {}}};
  TemplateOptions o;
  o.own = &own;
  try {
    tokenize_conversation(c, tok, o, "data.jsonl: conversation 3");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.jsonl: conversation 3: the model's chat_template "
                                         "renders the prompt before message 2 differently"),
              std::string::npos)
        << e.what();
  }
}

TEST(Conversation, GenerationBlocksMarkWhatIsLearnt) {
  // A template with {% generation %} blocks: their text is what is learnt (TRL's
  // assistant_only_loss), here the "A: " header included and the newline after it not.
  TempDir d;
  Tokenizer tok = llama2_with_template(
      d,
      "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}A: {{ m.content }}"
      "{{ eos_token }}{% endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}");
  ChatFormat own = ChatFormat::own(tok, {}, "t");
  Conversation c;
  c.turns = two_turns();
  TemplateOptions o;
  o.own = &own;
  Example ex = tokenize_conversation(c, tok, o, "test");
  EXPECT_EQ(learnt_text(ex, tok), "A: Hello!</s>A: Ciao.</s>");
}
