#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "generate/generate.h"
#include "io/generation_config.h"
#include "io/mapped_file.h"
#include "kernels/matmul.h"
#include "model/gguf_model.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_template.h"

namespace lamina {

std::vector<ArgSpec> model_arg_specs() {
  return {
      {"model", "DIR",
       "Hugging Face model directory (config.json, safetensors, tokenizer.model), or a .gguf file",
       kRequired},
      {"tokenizer", "DIR", "with a .gguf --model: the directory holding its tokenizer.model", ""},
      {"dtype", "f32|bf16|q8_0|q4_0",
       "compute weights in this type; q8_0/q4_0: quantized at load to ggml's blocks (default: as "
       "stored; f16 -> f32)",
       ""},
      {"threads", "N", "threads for the kernels (default: all cores)", ""}};
}

std::vector<ArgSpec> sampling_arg_specs() {
  return {
      {"max-new-tokens", "N", "most tokens to generate", "128"},
      {"temperature", "T", "sampling temperature; 0 = greedy", "0"},
      {"top-k", "K", "sample among the K most likely tokens; 0 = off", "0"},
      {"top-p", "P", "nucleus sampling mass; 1 = off", "1"},
      {"repetition-penalty", "R", "penalise tokens already seen (transformers' rule); 1 = off",
       "1"},
      {"min-p", "P",
       "drop tokens less likely than P times the most likely (transformers' min_p); 0 = off", "0"},
      {"presence-penalty", "X",
       "OpenAI's: subtract X from tokens already in the completion; 0 = off", "0"},
      {"frequency-penalty", "X", "OpenAI's: subtract X per occurrence in the completion; 0 = off",
       "0"},
      {"seed", "S", "random seed for sampling", "0"},
      {"stop", "TEXT", "stop before this string", "", true},
      {"stop-token", "ID", "stop at this token id (besides EOS)", "", true},
      {"chat-template", "NAME",
       "llama-2, mistral-instruct, openchat or chatml (default: from the model)", ""},
      {"condition", "TEXT",
       "OpenChat class condition (default: the model's generation_config chat_condition, "
       "else GPT4 Correct)",
       ""},
      {"system", "TEXT", "system prompt (with --chat)", ""}};
}

void check_model_path(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(path, ": no such file or directory (--model)");
  if (!is_gguf_file(path) &&
      !std::filesystem::exists(std::filesystem::path(path) / "config.json", ec))
    fail(path, ": neither a GGUF file nor a model directory (no config.json) (--model)");
}

LoadedModel load_model(const Args& a) {
  if (a.given("threads")) set_num_threads(int(a.integer("threads")));
  LoadOptions opt;
  if (a.given("dtype")) opt.dtype = parse_dtype(a.str("dtype"), "--dtype", true);
  const std::string dir = a.str("model");
  check_model_path(dir);
  // A GGUF holds the weights; its vocabulary comes from a SentencePiece tokenizer directory.
  const bool gguf = is_gguf_file(dir);
  if (gguf && !a.given("tokenizer"))
    fail(dir, ": a GGUF model needs --tokenizer DIR (a directory with its tokenizer.model)");
  const std::string tok_dir = gguf ? a.str("tokenizer") : dir;
  LoadedModel m{nullptr, Tokenizer::load(tok_dir)};
  m.model = gguf ? load_gguf_model(dir, opt) : Model::load(dir, opt);
  if (m.tokenizer.size() > m.model->config().vocab_size)
    fail(tok_dir, ": tokenizer has ", m.tokenizer.size(), " tokens but ", dir,
         " has a vocabulary of ", m.model->config().vocab_size);
  return m;
}

GenerateOptions generate_options(const Args& a) {
  GenerateOptions g;
  g.max_new_tokens = a.integer("max-new-tokens");
  if (g.max_new_tokens < 0) fail("--max-new-tokens must be >= 0");
  g.sampling.temperature = float(a.number("temperature"));
  g.sampling.top_k = a.integer("top-k");
  g.sampling.top_p = float(a.number("top-p"));
  g.sampling.repetition_penalty = float(a.number("repetition-penalty"));
  g.sampling.seed = uint64_t(a.integer("seed"));
  g.sampling.min_p = float(a.number("min-p"));
  g.sampling.presence_penalty = float(a.number("presence-penalty"));
  g.sampling.frequency_penalty = float(a.number("frequency-penalty"));
  g.stop_strings = a.all("stop");
  g.stop_ids = stop_token_ids(a);
  return g;
}

std::vector<int32_t> stop_token_ids(const Args& a) {
  std::vector<int32_t> ids;
  for (auto& s : a.all("stop-token")) {
    auto id = parse_integer(s);
    if (!id || *id < 0 || *id > INT32_MAX) fail("--stop-token: '", s, "' is not a token id");
    ids.push_back(int32_t(*id));
  }
  // generation_config.json may list further EOS ids (OpenChat's <|end_of_turn|>, Llama 3 lists).
  for (int32_t id : read_generation_config(a.str("model")).eos_token_ids) ids.push_back(id);
  return ids;
}

std::optional<ChatFormat> chat_format(const Args& a, const Tokenizer& tok) {
  std::optional<ChatTemplate> named;
  if (a.given("chat-template")) named = parse_chat_template(a.str("chat-template"));
  std::optional<std::string> condition;
  if (a.given("condition")) condition = a.str("condition");
  const std::string dir = a.given("tokenizer") ? a.str("tokenizer") : a.str("model");
  return choose_chat_format(tok, dir, named, condition);
}

std::string render_chat_prompt(const Args& a, const Tokenizer& tok, const std::string& system,
                               const std::vector<std::pair<std::string, std::string>>& turns) {
  auto fmt = chat_format(a, tok);
  const std::string dir = a.given("tokenizer") ? a.str("tokenizer") : a.str("model");
  if (!fmt)
    fail(dir,
         ": the model has no chat_template; pass --chat-template (llama-2, mistral-instruct, "
         "openchat, chatml)");
  std::vector<ChatMessage> msgs;
  if (!system.empty()) msgs.push_back({"system", system});
  for (auto& [user, assistant] : turns) {
    msgs.push_back({"user", user});
    if (!assistant.empty()) msgs.push_back({"assistant", assistant});
  }
  return fmt->render(msgs, true);
}

}  // namespace lamina
