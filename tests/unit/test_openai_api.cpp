// The OpenAI request parser and response builders of `lamina serve` (src/serve/openai_api.h):
// each field's type and range, the error naming it, and the shapes the OpenAI client reads.
#include <gtest/gtest.h>

#include "serve/openai_api.h"

namespace lamina {
namespace {

using nlohmann::json;

CompletionRequest chat(const std::string& extra) {
  GenerateOptions base;
  base.stop_ids = {7};
  return parse_completion_request(
      R"({"model": "m", "messages": [{"role": "user", "content": "Hi"}])" + extra + "}", true, base,
      "m");
}

// The parameter an invalid body is refused for (400), or "" when it is accepted.
std::string refused_param(const std::string& body, bool is_chat = true) {
  try {
    parse_completion_request(body, is_chat, GenerateOptions{}, "m");
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_FALSE(std::string(e.what()).empty());
    return e.param.empty() ? "<none>" : e.param;
  }
  return "";
}

TEST(OpenAiApi, ChatFieldsBecomeGenerateOptions) {
  auto r = chat(R"(, "max_tokens": 12, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
      "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
      "seed": 42, "stop": ["\n", "END"], "logprobs": true, "top_logprobs": 3, "stream": true,
      "stream_options": {"include_usage": true})");
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "Hi");
  EXPECT_EQ(r.opt.max_new_tokens, 12);
  EXPECT_FLOAT_EQ(r.opt.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.opt.sampling.top_p, 0.9f);
  EXPECT_EQ(r.opt.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.opt.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.opt.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.opt.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.opt.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r.opt.sampling.seed, 42u);
  EXPECT_EQ(r.opt.stop_strings, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(r.opt.stop_ids, (std::vector<int32_t>{7}));  // the server's EOS ids kept
  EXPECT_EQ(r.opt.top_logprobs, 3);
  EXPECT_TRUE(r.stream && r.include_usage);
}

TEST(OpenAiApi, DefaultsAreOpenAis) {
  auto r = chat("");
  EXPECT_EQ(r.opt.max_new_tokens, -1);  // to the end of the context
  EXPECT_FLOAT_EQ(r.opt.sampling.temperature, 1.0f);
  EXPECT_EQ(r.opt.top_logprobs, -1);
  EXPECT_FALSE(r.stream);
  // max_completion_tokens is the newer name of max_tokens; developer the newer name of system.
  EXPECT_EQ(chat(R"(, "max_completion_tokens": 5)").opt.max_new_tokens, 5);
  auto d = parse_completion_request(
      R"({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
          {"type": "text", "text": "b"}]}, {"role": "assistant", "content": null}]})",
      true, GenerateOptions{}, "m");
  EXPECT_EQ(d.messages[0].role, "system");
  EXPECT_EQ(d.messages[0].content, "ab");
  EXPECT_EQ(d.messages[1].content, "");
}

TEST(OpenAiApi, BadValuesNameTheParameter) {
  const std::string m = R"({"messages": [{"role": "user", "content": "x"}], )";
  EXPECT_EQ(refused_param("{"), "<none>");
  EXPECT_EQ(refused_param("[]"), "<none>");
  EXPECT_EQ(refused_param("3e3333"), "<none>");  // a number beyond double (found by the fuzzer)
  EXPECT_EQ(refused_param(R"({"messages": []})"), "messages");
  EXPECT_EQ(refused_param(R"({"messages": [{"content": "x"}]})"), "messages[0]");
  EXPECT_EQ(refused_param(R"({"messages": [{"role": "bot", "content": "x"}]})"),
            "messages[0].role");
  EXPECT_EQ(refused_param(R"({"messages": [{"role": "user", "content": 3}]})"),
            "messages[0].content");
  EXPECT_EQ(
      refused_param(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
      "messages[0].content[0]");
  EXPECT_EQ(refused_param(m + R"("model": "other"})"), "model");
  EXPECT_EQ(refused_param(m + R"("temperature": "hot"})"), "temperature");
  EXPECT_EQ(refused_param(m + R"("temperature": 2.5})"), "temperature");
  EXPECT_EQ(refused_param(m + R"("top_p": -0.1})"), "top_p");
  EXPECT_EQ(refused_param(m + R"("max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(refused_param(m + R"("max_tokens": 1.5})"), "max_tokens");
  EXPECT_EQ(refused_param(m + R"("presence_penalty": 3})"), "presence_penalty");
  EXPECT_EQ(refused_param(m + R"("n": 2})"), "n");
  EXPECT_EQ(refused_param(m + R"("stop": ["a", "b", "c", "d", "e"]})"), "stop");
  EXPECT_EQ(refused_param(m + R"("stop": [""]})"), "stop");
  EXPECT_EQ(refused_param(m + R"("top_logprobs": 2})"), "top_logprobs");  // needs logprobs
  EXPECT_EQ(refused_param(m + R"("logprobs": true, "top_logprobs": 21})"), "top_logprobs");
  EXPECT_EQ(refused_param(m + R"("stream_options": {"include_usage": true}})"), "stream_options");
  EXPECT_EQ(refused_param(m + R"("stream": "yes"})"), "stream");
  EXPECT_EQ(refused_param(m + R"("seed": "1"})"), "seed");
  // Completions: a prompt string (or one in an array), or token ids (or one list of them);
  // logprobs an integer 0..5.
  EXPECT_EQ(refused_param(R"({"prompt": ""})", false), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt": []})", false), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt": [1, -2]})", false), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt": [1, "a"]})", false), "prompt");
  EXPECT_EQ(refused_param(R"({"prompt": [[1, 2], [3]]})", false), "prompt");  // one prompt only
  EXPECT_EQ(refused_param(R"({"prompt": ["x", "y"]})", false), "prompt");
  EXPECT_EQ(parse_completion_request(R"({"prompt": [1, 450, 7]})", false, GenerateOptions{}, "m")
                .prompt_ids,
            (std::vector<int32_t>{1, 450, 7}));
  EXPECT_EQ(
      parse_completion_request(R"({"prompt": [[5]]})", false, GenerateOptions{}, "m").prompt_ids,
      (std::vector<int32_t>{5}));
  EXPECT_EQ(refused_param(R"({"prompt": "x", "logprobs": 6})", false), "logprobs");
  EXPECT_EQ(refused_param(R"({"prompt": ["x"], "logprobs": 2, "echo": true})", false), "");
  EXPECT_EQ(refused_param(m + R"("unknown_field": 1, "user": "u"})"), "");  // ignored
}

TEST(OpenAiApi, ResponseShapes) {
  auto req = chat(R"(, "logprobs": true, "top_logprobs": 1)");
  CompletionOutput out;
  out.id = "chatcmpl-1";
  out.model = "m";
  out.result.ids = {5, 6};
  out.result.text = "hey";
  out.result.stop_reason = "eos";
  out.result.prompt_tokens = 4;
  out.result.logprobs = {{5, -0.5f, {{5, -0.5f}}}, {6, -1.0f, {{6, -1.0f}}}};
  out.token_texts = {"he", "y"};
  out.top_texts = {{"he"}, {"y"}};
  json j = completion_response(req, out);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "hey");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 6);
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][1]["token"], "y");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["bytes"], json::array({104, 101}));
  json c = stream_chunk(req, out, "", true, "");
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  out.result.stop_reason = "length";
  EXPECT_EQ(
      stream_chunk(req, out, "", false, finish_reason("length"))["choices"][0]["finish_reason"],
      "length");
  EXPECT_TRUE(usage_chunk(req, out)["choices"].empty());
  json e = error_body(429, "full", "", "rate_limit_exceeded");
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
}

}  // namespace
}  // namespace lamina
