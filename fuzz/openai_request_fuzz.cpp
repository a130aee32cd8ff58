// libFuzzer target for lamina serve's request parser (src/serve/openai_api.cpp): the first byte
// picks chat or completions, the rest is the HTTP body. parse_completion_request must either
// return or throw ApiError (a 400 the server answers); anything else (a nlohmann exception, a
// sanitizer finding) is a crash. An accepted request's response JSON is built and dumped too.
#include <cstdint>
#include <string>

#include "serve/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    lamina::CompletionRequest r =
        lamina::parse_completion_request(body, chat, lamina::GenerateOptions{}, "m");
    lamina::CompletionOutput out;
    out.result.text = r.chat ? "" : r.prompt;
    out.result.stop_reason = "eos";
    (void)lamina::completion_response(r, out).dump();
    (void)lamina::stream_chunk(r, out, r.prompt, true, "").dump();
  } catch (const lamina::ApiError&) {
  }
  return 0;
}
