// lamina generate: continue a prompt, streaming the completion only to stdout.
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "io/mapped_file.h"

namespace lamina {

int cmd_generate(int argc, char** argv) {
  Args a("generate",
         "Continue a prompt and print the completion only (streamed). With --chat the prompt is\n"
         "a user message in the model's chat template.",
         join_specs(
             model_arg_specs(), sampling_arg_specs(),
             std::vector<ArgSpec>{{"prompt", "TEXT", "the prompt", ""},
                                  {"prompt-file", "FILE", "read the prompt from a file", ""},
                                  {"chat", "", "apply the chat template", ""},
                                  {"stats", "", "print token counts and speed to stderr", ""}}));
  if (!a.parse(argc, argv)) return 0;
  std::string prompt = a.str("prompt");
  if (a.given("prompt-file")) prompt = read_text_file(a.str("prompt-file"));
  if (!a.given("prompt") && !a.given("prompt-file")) fail("give --prompt or --prompt-file");
  if (prompt.empty()) fail("--prompt: empty prompt");
  LoadedModel m = load_model(a);
  std::vector<int32_t> ids;
  if (a.flag("chat"))
    ids = m.tokenizer.encode(render_chat_prompt(a, m.tokenizer, a.str("system"), {{prompt, ""}}),
                             false);
  else
    ids = m.tokenizer.encode(prompt, m.tokenizer.add_bos_default());
  auto opt = generate_options(a);
  const auto& cfg = m.model->config();
  if (int64_t(ids.size()) > cfg.max_position_embeddings)
    fail("prompt of ", ids.size(), " tokens is longer than the context of ",
         cfg.max_position_embeddings, " tokens");
  KVCache cache = m.model->new_cache(int64_t(ids.size()) + opt.max_new_tokens);
  auto r = generate(*m.model, m.tokenizer, ids, opt, cache,
                    [](const std::string& s, std::span<const TokenLogprob>) {
                      std::fwrite(s.data(), 1, s.size(), stdout);
                      std::fflush(stdout);
                    });
  std::printf("\n");
  std::fflush(stdout);
  if (a.flag("stats"))
    std::fprintf(stderr,
                 "prompt: %lld tokens, %.1f tok/s; generated: %zu tokens, %.1f tok/s; stop: %s\n",
                 (long long)r.prompt_tokens,
                 double(r.prompt_tokens) / std::max(r.prompt_seconds, 1e-9), r.ids.size(),
                 double(r.ids.size()) / std::max(r.decode_seconds, 1e-9), r.stop_reason.c_str());
  return 0;
}

}  // namespace lamina
