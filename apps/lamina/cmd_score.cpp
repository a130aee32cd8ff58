// lamina score: per-token log-probabilities of a text under the model, in one batched forward.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "io/mapped_file.h"
#include "io/npy.h"
#include "kernels/ops.h"

namespace lamina {

int cmd_score(int argc, char** argv) {
  Args a("score",
         "Score a text: log p(token | previous tokens) for every token after the first, the total\n"
         "log-likelihood and the perplexity exp(-mean log p).",
         join_specs(model_arg_specs(),
                    std::vector<ArgSpec>{
                        {"text", "FILE", "text file to score", ""},
                        {"ids", "I,J,...", "score these token ids instead of a text", ""},
                        {"no-bos", "", "do not prepend BOS", ""},
                        {"per-token", "", "list every token with its log-probability", ""},
                        {"json", "", "print JSON", ""},
                        {"dump-logits", "FILE", "write all logits [T, V] as a .npy file", ""}}));
  if (!a.parse(argc, argv)) return 0;
  if (a.given("text") == a.given("ids")) fail("give exactly one of --text FILE or --ids");
  LoadedModel m = load_model(a);
  const auto& cfg = m.model->config();
  std::vector<int32_t> ids;
  if (a.given("ids")) {
    std::stringstream ss(a.str("ids"));
    for (std::string t; std::getline(ss, t, ',');) {
      auto id = parse_integer(t);
      if (!id || *id < 0 || *id > INT32_MAX) fail("--ids: '", t, "' is not a token id");
      ids.push_back(int32_t(*id));
    }
  } else {
    std::string text = read_text_file(a.str("text"));
    if (text.empty()) fail(a.str("text"), ": empty text");
    ids = m.tokenizer.encode(text, !a.flag("no-bos") && m.tokenizer.add_bos_default());
  }
  const int64_t T = int64_t(ids.size()), V = cfg.vocab_size;
  if (T < 2) fail("need at least 2 tokens to score, got ", T);
  if (T > cfg.max_position_embeddings)
    fail("text of ", T, " tokens is longer than the context of ", cfg.max_position_embeddings,
         " tokens");
  for (auto id : ids)
    if (id < 0 || id >= V) fail("--ids: token id ", id, " is outside the vocabulary [0, ", V, ")");
  KVCache cache = m.model->new_cache(T);
  Tensor logits = Tensor::empty(DType::F32, {T, V});
  m.model->forward(ids.data(), T, cache, logits.f32(), true);
  if (a.given("dump-logits")) write_npy(a.str("dump-logits"), logits);
  std::vector<double> lp(size_t(T), 0.0);
  double total = 0;
  for (int64_t t = 1; t < T; ++t)
    total += lp[size_t(t)] = log_softmax_at(logits.f32() + (t - 1) * V, V, ids[size_t(t)]);
  const double ppl = std::exp(-total / double(T - 1));
  if (a.flag("json")) {
    nlohmann::json j = {
        {"tokens", ids}, {"num_scored", T - 1}, {"total_logprob", total}, {"perplexity", ppl}};
    nlohmann::json pieces = nlohmann::json::array(), lps = nlohmann::json::array();
    for (int64_t t = 0; t < T; ++t) {
      pieces.push_back(m.tokenizer.piece(ids[size_t(t)]));
      lps.push_back(t == 0 ? nlohmann::json(nullptr) : nlohmann::json(lp[size_t(t)]));
    }
    j["pieces"] = pieces;
    j["logprobs"] = lps;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  if (a.flag("per-token"))
    for (int64_t t = 1; t < T; ++t)
      std::printf("%6lld %8d %-20s %10.4f\n", (long long)t, ids[size_t(t)],
                  m.tokenizer.piece(ids[size_t(t)]).c_str(), lp[size_t(t)]);
  std::printf(
      "tokens: %lld (scored %lld)\nlog-likelihood: %.6f\nmean nll: %.6f\nperplexity: %.4f\n",
      (long long)T, (long long)(T - 1), total, -total / double(T - 1), ppl);
  return 0;
}

}  // namespace lamina
