// lamina chat: interactive multi-turn chat; the KV cache keeps the conversation's shared prefix.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "core/error.h"

namespace lamina {

int cmd_chat(int argc, char** argv) {
  Args a("chat",
         "Interactive chat in the model's chat template. Type a message and press Enter;\n"
         "/reset starts over, /exit (or end of input) quits.",
         join_specs(model_arg_specs(), sampling_arg_specs(),
                    std::vector<ArgSpec>{{"context", "N", "context length to allocate", "4096"}}));
  if (!a.parse(argc, argv)) return 0;
  LoadedModel m = load_model(a);
  auto opt = generate_options(a);
  KVCache cache = m.model->new_cache(a.integer("context"));
  std::vector<std::pair<std::string, std::string>> turns;
  std::vector<int32_t> cached;  // tokens whose keys/values the cache holds
  const bool tty = isatty(0);
  for (;;) {
    if (tty) std::fprintf(stderr, "\n> ");
    std::string line;
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line == "/reset") {
      turns.clear();
      cached.clear();
      cache.clear();
      continue;
    }
    if (line.empty()) continue;
    turns.push_back({line, ""});
    auto ids =
        m.tokenizer.encode(render_chat_prompt(a, m.tokenizer, a.str("system"), turns), false);
    if (int64_t(ids.size()) + opt.max_new_tokens > cache.capacity) {
      std::fprintf(stderr,
                   "lamina chat: the conversation no longer fits the context of %lld tokens; "
                   "/reset to start over\n",
                   (long long)cache.capacity);
      turns.pop_back();
      continue;
    }
    reuse_cache_prefix(cache, cached, ids);
    auto r = generate(*m.model, m.tokenizer, ids, opt, cache,
                      [](const std::string& s, std::span<const TokenLogprob>) {
                        std::fwrite(s.data(), 1, s.size(), stdout);
                        std::fflush(stdout);
                      });
    std::printf("\n");
    std::fflush(stdout);
    turns.back().second = r.text.empty() ? " " : r.text;
    cached = ids;
    cached.insert(cached.end(), r.ids.begin(), r.ids.end());
    cached.resize(size_t(std::min<int64_t>(int64_t(cached.size()), cache.len)));
  }
  return 0;
}

}  // namespace lamina
