// The OpenAI API's request and response bodies for `lamina serve`, without the HTTP: a request
// body checked field by field into what the engine runs (an ApiError naming the field when a
// value is wrong), and the JSON of responses, stream chunks and errors in OpenAI's shapes.
// Chat completions: POST /v1/chat/completions; legacy completions: POST /v1/completions.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "generate/generate.h"
#include "tokenizer/chat_template.h"

namespace lamina {

// An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "",
           std::string code = "invalid_request_error_value")
      : std::runtime_error(message),
        status(status),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string param, code;
};

nlohmann::json error_body(int status, const std::string& message, const std::string& param = "",
                          const std::string& code = "");

struct CompletionRequest {
  bool chat = false;
  std::string model;                  // as the client named it ("" when absent)
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
  // completions: a prompt given as token ids (OpenAI's array of integers), taken as given (no BOS
  // added); `prompt` is then their decoded text (for echo)
  std::vector<int32_t> prompt_ids;
  GenerateOptions opt;  // sampling, stop strings, logprobs; max_new_tokens = -1: to
                        // the end of the context
  bool stream = false, include_usage = false;
  bool echo = false;  // completions: the prompt before the completion
};

// Parses a request body. `base` holds the server's defaults (EOS ids from generation_config,
// the sampling defaults); `model_name` is the one model served. Throws ApiError (400).
CompletionRequest parse_completion_request(const std::string& body, bool chat,
                                           const GenerateOptions& base,
                                           const std::string& model_name);

// "stop" for EOS and stop strings, "length" for max_tokens or the context.
std::string finish_reason(const std::string& stop_reason);

struct CompletionOutput {
  std::string id, model;
  int64_t created = 0;
  GenerateResult result;
  std::vector<std::string> token_texts;             // the text of each generated id (for logprobs)
  std::vector<std::vector<std::string>> top_texts;  // the text of each top alternative
};

// A whole (non-streamed) response.
nlohmann::json completion_response(const CompletionRequest& req, const CompletionOutput& out);
// One streamed chunk carrying `text` (the first chat chunk carries the role); finish: the
// final chunk's finish_reason ("" for none).
nlohmann::json stream_chunk(const CompletionRequest& req, const CompletionOutput& out,
                            const std::string& text, bool first, const std::string& finish);
// The usage-only chunk of stream_options.include_usage (choices empty).
nlohmann::json usage_chunk(const CompletionRequest& req, const CompletionOutput& out);
// The logprobs object of a choice (chat: {"content": [...]}; completions: tokens/token_logprobs/
// top_logprobs/text_offset), over the tokens [from, to) of out.
nlohmann::json logprobs_json(const CompletionRequest& req, const CompletionOutput& out, size_t from,
                             size_t to);

}  // namespace lamina
