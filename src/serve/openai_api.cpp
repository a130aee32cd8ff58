#include "serve/openai_api.h"

#include <cstdint>
#include <random>

namespace lamina {
namespace {

using nlohmann::json;

std::string type_for(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status == 413) return "invalid_request_error";
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

double number_in(const json& j, const char* key, double lo, double hi) {
  const json& v = j.at(key);
  if (!v.is_number()) bad(key, std::string("'") + key + "' must be a number");
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    bad(key, std::string("'") + key + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() +
                 "], got " + v.dump());
  return x;
}

int64_t integer_in(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer()) bad(key, std::string("'") + key + "' must be an integer");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + "], got " + v.dump());
  return x;
}

bool boolean(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_boolean()) bad(key, std::string("'") + key + "' must be a boolean");
  return v.get<bool>();
}

bool has(const json& j, const char* key) {
  return j.contains(key) && !j.at(key).is_null();
}

// A message's content: a string, or an array of parts of which only text parts are supported.
std::string content_text(const json& c, const std::string& param) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad(param, "'" + param + "' must be a string or an array of content parts");
  std::string text;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      bad(p, "'" + p + "': only {\"type\": \"text\", \"text\": ...} parts are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

json usage_json(const GenerateResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", int64_t(r.ids.size())},
          {"total_tokens", r.prompt_tokens + int64_t(r.ids.size())}};
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

}  // namespace

json error_body(int status, const std::string& message, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type_for(status)},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

CompletionRequest parse_completion_request(const std::string& body, bool chat,
                                           const GenerateOptions& base,
                                           const std::string& model_name) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what(), "",
                   "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "");
  CompletionRequest r;
  r.chat = chat;
  r.opt = base;
  r.opt.max_new_tokens = -1;
  r.opt.stop_strings.clear();
  r.opt.sampling.temperature = 1.0f;  // OpenAI's defaults
  r.opt.sampling.top_p = 1.0f;
  r.opt.sampling.seed = std::random_device{}();
  if (has(j, "model")) {
    if (!j["model"].is_string()) bad("model", "'model' must be a string");
    r.model = j["model"].get<std::string>();
    if (r.model != model_name)
      throw ApiError(
          400,
          "the model '" + r.model + "' does not exist; this server serves '" + model_name + "'",
          "model", "model_not_found");
  }
  if (chat) {
    if (!j.contains("messages")) bad("messages", "'messages' is required");
    const json& m = j["messages"];
    if (!m.is_array() || m.empty()) bad("messages", "'messages' must be a non-empty array");
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string p = "messages[" + std::to_string(i) + "]";
      if (!m[i].is_object() || !m[i].contains("role") || !m[i]["role"].is_string())
        bad(p, "'" + p + "' must be an object with a 'role'");
      std::string role = m[i]["role"].get<std::string>();
      if (role == "developer") role = "system";  // OpenAI's newer name for it
      if (role != "system" && role != "user" && role != "assistant")
        bad(p + ".role",
            "'" + p + ".role' must be system, developer, user or assistant, got '" + role + "'");
      r.messages.push_back(
          {role, content_text(m[i].contains("content") ? m[i]["content"] : json(nullptr),
                              p + ".content")});
    }
  } else {
    if (!j.contains("prompt")) bad("prompt", "'prompt' is required");
    const json& p = j["prompt"];
    // Token ids: [1, 450, ...], or one such list in an array (the batch form with one prompt).
    auto ids_of = [&](const json& a) {
      if (!a.is_array() || a.empty()) return false;
      for (const json& v : a) {
        if (!v.is_number_integer()) return false;
        const int64_t id = v.get<int64_t>();
        if (id < 0 || id > INT32_MAX)
          bad("prompt", "token id " + std::to_string(id) + " in 'prompt' is out of range");
        r.prompt_ids.push_back(int32_t(id));
      }
      return true;
    };
    if (p.is_string())
      r.prompt = p.get<std::string>();
    else if (p.is_array() && p.size() == 1 && p[0].is_string())
      r.prompt = p[0].get<std::string>();
    else if (!ids_of(p) && !(p.is_array() && p.size() == 1 && ids_of(p[0])))
      bad("prompt",
          "'prompt' must be a string, an array of one string, or an array of token ids (one "
          "prompt)");
    if (r.prompt.empty() && r.prompt_ids.empty()) bad("prompt", "'prompt' is empty");
    if (has(j, "echo")) r.echo = boolean(j, "echo");
  }
  if (has(j, "n") && integer_in(j, "n", 1, 1) != 1) bad("n", "only n = 1 is supported");
  for (const char* k : {"max_tokens", "max_completion_tokens"})
    if (has(j, k)) r.opt.max_new_tokens = integer_in(j, k, 0, int64_t(1) << 40);
  auto& s = r.opt.sampling;
  if (has(j, "temperature")) s.temperature = float(number_in(j, "temperature", 0, 2));
  if (has(j, "top_p")) s.top_p = float(number_in(j, "top_p", 0, 1));
  if (has(j, "top_k")) s.top_k = integer_in(j, "top_k", 0, int64_t(1) << 31);
  if (has(j, "min_p")) s.min_p = float(number_in(j, "min_p", 0, 1));
  if (has(j, "presence_penalty"))
    s.presence_penalty = float(number_in(j, "presence_penalty", -2, 2));
  if (has(j, "frequency_penalty"))
    s.frequency_penalty = float(number_in(j, "frequency_penalty", -2, 2));
  if (has(j, "repetition_penalty"))
    s.repetition_penalty = float(number_in(j, "repetition_penalty", 1e-3, 100));
  if (has(j, "seed")) {
    if (!j["seed"].is_number_integer()) bad("seed", "'seed' must be an integer");
    s.seed = uint64_t(j["seed"].get<int64_t>());
  }
  if (has(j, "stop")) {
    const json& st = j["stop"];
    if (st.is_string()) {
      r.opt.stop_strings.push_back(st.get<std::string>());
    } else if (st.is_array() && st.size() <= 4) {
      for (auto& x : st) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or an array of strings");
        r.opt.stop_strings.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of up to 4 strings");
    }
    for (auto& x : r.opt.stop_strings)
      if (x.empty()) bad("stop", "'stop' strings must not be empty");
  }
  if (chat) {
    const bool lp = has(j, "logprobs") && boolean(j, "logprobs");
    if (has(j, "top_logprobs")) {
      const int64_t k = integer_in(j, "top_logprobs", 0, 20);
      if (!lp) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      r.opt.top_logprobs = k;
    } else if (lp) {
      r.opt.top_logprobs = 0;
    }
  } else if (has(j, "logprobs")) {
    r.opt.top_logprobs = integer_in(j, "logprobs", 0, 5);
  }
  if (has(j, "stream")) r.stream = boolean(j, "stream");
  if (has(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    if (has(so, "include_usage")) {
      if (!so["include_usage"].is_boolean())
        bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  return r;
}

std::string finish_reason(const std::string& stop_reason) {
  return stop_reason == "eos" || stop_reason == "stop_string" ? "stop" : "length";
}

json logprobs_json(const CompletionRequest& req, const CompletionOutput& out, size_t from,
                   size_t to) {
  const auto& lp = out.result.logprobs;
  to = std::min(to, lp.size());
  if (req.chat) {
    json content = json::array();
    for (size_t i = from; i < to; ++i) {
      json top = json::array();
      for (size_t k = 0; k < lp[i].top.size(); ++k)
        top.push_back({{"token", out.top_texts[i][k]},
                       {"logprob", lp[i].top[k].second},
                       {"bytes", bytes_of(out.top_texts[i][k])}});
      content.push_back({{"token", out.token_texts[i]},
                         {"logprob", lp[i].logprob},
                         {"bytes", bytes_of(out.token_texts[i])},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  size_t offset = req.echo ? req.prompt.size() : 0;
  for (size_t i = 0; i < from; ++i) offset += out.token_texts[i].size();
  for (size_t i = from; i < to; ++i) {
    tokens.push_back(out.token_texts[i]);
    token_logprobs.push_back(lp[i].logprob);
    json alt = json::object();
    for (size_t k = 0; k < lp[i].top.size(); ++k) alt[out.top_texts[i][k]] = lp[i].top[k].second;
    top.push_back(alt);
    offsets.push_back(offset);
    offset += out.token_texts[i].size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json completion_response(const CompletionRequest& req, const CompletionOutput& out) {
  const GenerateResult& r = out.result;
  json choice = {{"index", 0}, {"finish_reason", finish_reason(r.stop_reason)}};
  choice["logprobs"] =
      req.opt.top_logprobs >= 0 ? logprobs_json(req, out, 0, r.ids.size()) : json(nullptr);
  if (req.chat)
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  else
    choice["text"] = req.echo ? req.prompt + r.text : r.text;
  return {{"id", out.id},
          {"object", req.chat ? "chat.completion" : "text_completion"},
          {"created", out.created},
          {"model", out.model},
          {"choices", json::array({choice})},
          {"usage", usage_json(r)}};
}

json stream_chunk(const CompletionRequest& req, const CompletionOutput& out,
                  const std::string& text, bool first, const std::string& finish) {
  json choice = {{"index", 0}, {"finish_reason", finish.empty() ? json(nullptr) : json(finish)}};
  if (req.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  json c = {{"id", out.id},
            {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", out.created},
            {"model", out.model},
            {"choices", json::array({choice})}};
  if (req.include_usage) c["usage"] = nullptr;
  return c;
}

json usage_chunk(const CompletionRequest& req, const CompletionOutput& out) {
  return {{"id", out.id},
          {"object", req.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", out.created},
          {"model", out.model},
          {"choices", json::array()},
          {"usage", usage_json(out.result)}};
}

}  // namespace lamina
