#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_files.h"

using namespace lamina;

namespace {
const std::vector<ChatMessage> kConv = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
}

TEST(ChatTemplate, Llama2) {
  EXPECT_EQ(
      render_chat(ChatTemplate::Llama2, kConv, true),
      "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, MistralInstruct) {
  EXPECT_EQ(render_chat(ChatTemplate::MistralInstruct, kConv, true),
            "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, OpenChatWithCondition) {
  std::vector<ChatMessage> c(kConv.begin() + 1, kConv.end());
  EXPECT_EQ(render_chat(ChatTemplate::OpenChat, c, true),
            "<s>GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant: Hello!<|end_of_turn|>"
            "GPT4 Correct User: 2+2?<|end_of_turn|>GPT4 Correct Assistant:");
  ChatTokens k;
  k.condition = "GPT4";  // a C-RLFT training condition
  EXPECT_EQ(render_chat(ChatTemplate::OpenChat, {{"user", "Hi"}}, false, k),
            "<s>GPT4 User: Hi<|end_of_turn|>");
  k.condition = "";  // no condition: bare role prefix
  EXPECT_EQ(render_chat(ChatTemplate::OpenChat, {{"user", "Hi"}}, true, k),
            "<s>User: Hi<|end_of_turn|>Assistant:");
}

TEST(ChatTemplate, ChatML) {
  EXPECT_EQ(
      render_chat(ChatTemplate::ChatML, {{"system", "S"}, {"user", "U"}}, true),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, DetectsTheShippedJinjaTemplates) {
  for (auto name : {"llama-2", "mistral-instruct", "openchat", "chatml"}) {
    auto t = detect_chat_template(jinja_chat_template(name));
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_STREQ(chat_template_name(*t), name);
  }
  EXPECT_FALSE(detect_chat_template("{{ messages }}").has_value());
  // openchat-3.6 (Llama 3 based) is not OpenChat 3.5's format, though it names the condition.
  EXPECT_FALSE(detect_chat_template("{{ '<|start_header_id|>GPT4 Correct ' + m['role'].title() + "
                                    "'<|end_header_id|>' }}")
                   .has_value());
  EXPECT_THROW(parse_chat_template("vicuna"), Error);
  EXPECT_THROW(render_chat(ChatTemplate::ChatML, {{"robot", "x"}}, true), Error);
}
