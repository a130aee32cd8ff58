// lamina bench: prompt (pp) and decode (tg) throughput of a model on this CPU, as llama-bench
// reports them — mean ± standard deviation over repetitions after one warm-up — beside the CPU,
// the kernels chosen for it, the measured memory bandwidth (decode as a fraction of the limit it
// sets: weight bytes read per token over bandwidth) and the peak resident memory. Token ids are
// synthetic (no tokenizer).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/memory_bandwidth.h"
#include "kernels/quant_dot.h"
#include "model/gguf_model.h"

namespace lamina {

namespace {

using clk = std::chrono::steady_clock;

struct Stat {
  double mean = 0, sd = 0;
};
Stat stat(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x / double(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / double(v.size() - 1)) : 0;
  return s;
}

// Weight bytes one decoded token reads: every matrix of every layer once (for Mixtral the top-k
// share of the experts), the LM head, one embedding row (negligible, left out).
double decode_bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  double b = double(w.lm_head.nbytes());
  for (const LayerWeights& L : w.layers) {
    for (const Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down, &L.router})
      if (t->defined()) b += double(t->nbytes());
    double experts = 0;
    for (const auto* v : {&L.e_gate, &L.e_up, &L.e_down})
      for (const Tensor& t : *v) experts += double(t.nbytes());
    if (c.is_moe()) b += experts * double(c.num_experts_per_tok) / double(c.num_local_experts);
  }
  return b;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  Args a(
      "bench",
      "Throughput of a model on this CPU: a prompt of --n-prompt tokens in one forward (pp) and\n"
      "--n-gen tokens generated one at a time after it (tg), tokens/s as mean ± sd over\n"
      "--repetitions runs after a warm-up, with the CPU, its kernels and the peak memory.",
      std::vector<ArgSpec>{
          {"model", "DIR|FILE.gguf", "Hugging Face model directory or GGUF file", kRequired},
          {"dtype", "f32|bf16|q8_0|q4_0", "compute weights in this type (default: as stored)", ""},
          {"threads", "N", "threads for the kernels (default: all cores)", ""},
          {"n-prompt", "N", "prompt tokens (0: no prompt test; llama-bench's -p)", "512"},
          {"n-gen", "N", "generated tokens (0: no decode test; llama-bench's -n)", "128"},
          {"repetitions", "N", "measured runs of each test (llama-bench's -r)", "3"},
          {"no-bandwidth", "", "skip measuring the memory bandwidth (a 1 GiB streaming read)", ""},
          {"json", "", "print one JSON object", ""}});
  if (!a.parse(argc, argv)) return 0;
  const int64_t P = a.integer("n-prompt"), D = a.integer("n-gen"), R = a.integer("repetitions");
  if (P + D == 0) fail("--n-prompt and --n-gen are both 0: nothing to measure");
  if (a.given("threads")) set_num_threads(int(a.integer("threads")));
  LoadOptions opt;
  if (a.given("dtype")) opt.dtype = parse_dtype(a.str("dtype"), "--dtype", true);
  const std::string path = a.str("model");
  check_model_path(path);
  auto m = is_gguf_file(path) ? load_gguf_model(path, opt) : Model::load(path, opt);
  const ModelConfig& cfg = m->config();
  if (P + D + 1 > cfg.max_position_embeddings)
    fail("--n-prompt + --n-gen = ", P + D, " exceeds the context of ", cfg.max_position_embeddings,
         " of ", path);
  const int64_t V = cfg.vocab_size;
  std::vector<int32_t> ids(size_t(std::max<int64_t>(P, 1)));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((int64_t(i) * 7919 + 13) % V);
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<double> pp, tg;
  for (int64_t r = 0; r <= R; ++r) {  // round 0 warms up (primitives, pages, caches)
    KVCache c = m->new_cache(P + D + 1);
    auto t0 = clk::now();
    if (P) m->forward(ids.data(), P, c, logits.data(), false);
    const double tp = std::chrono::duration<double>(clk::now() - t0).count();
    int32_t next = 1;
    t0 = clk::now();
    for (int64_t d = 0; d < D; ++d) {
      m->forward(&next, 1, c, logits.data(), false);
      next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    const double td = std::chrono::duration<double>(clk::now() - t0).count();
    if (r == 0) continue;
    if (P) pp.push_back(double(P) / tp);
    if (D) tg.push_back(double(D) / td);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double peak_gib = double(ru.ru_maxrss) / (1024.0 * 1024.0);
  const std::string dtype = a.given("dtype") ? a.str("dtype") : "as stored";
  const Stat sp = stat(pp), sd = stat(tg);
  // Decode streams the weights once per token: bandwidth / bytes is its ceiling on this machine.
  const double bytes = decode_bytes_per_token(*m);
  const double bw = a.flag("no-bandwidth") ? 0 : measure_read_bandwidth();
  const double limit = bw > 0 ? bw / bytes : 0;
  if (a.flag("json")) {
    nlohmann::json j = {{"model", path},
                        {"dtype", dtype},
                        {"threads", num_threads()},
                        {"cpu", cpu_description()},
                        {"quant_kernel", quant_kernel_name(default_quant_kernel())},
                        {"peak_rss_gib", peak_gib},
                        {"decode_bytes_per_token", bytes}};
    if (bw > 0) j["read_bandwidth_gb_s"] = bw / 1e9;
    if (P) j["pp"] = {{"tokens", P}, {"tokens_per_s", sp.mean}, {"sd", sp.sd}};
    if (D) j["tg"] = {{"tokens", D}, {"tokens_per_s", sd.mean}, {"sd", sd.sd}};
    if (D && limit > 0) {
      j["tg"]["bandwidth_limit_tokens_per_s"] = limit;
      j["tg"]["fraction_of_bandwidth_limit"] = sd.mean / limit;
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model: %s (%s), %s, %lld layers, hidden %lld\n", path.c_str(), dtype.c_str(),
              arch_name(cfg.arch), (long long)cfg.num_hidden_layers, (long long)cfg.hidden_size);
  std::printf("CPU: %s; %d threads; quantized products: %s\n", cpu_description().c_str(),
              num_threads(), quant_kernel_name(default_quant_kernel()));
  if (bw > 0)
    std::printf(
        "memory read bandwidth: %.1f GB/s measured; decode reads %.3f GB of weights per "
        "token: at most %.2f tokens/s\n",
        bw / 1e9, bytes / 1e9, limit);
  std::printf("| test | tokens/s | of the bandwidth limit |\n|---|---|---|\n");
  if (P) std::printf("| pp%lld | %.2f ± %.2f | |\n", (long long)P, sp.mean, sp.sd);
  if (D && limit > 0)
    std::printf("| tg%lld | %.2f ± %.2f | %.0f%% |\n", (long long)D, sd.mean, sd.sd,
                100.0 * sd.mean / limit);
  else if (D)
    std::printf("| tg%lld | %.2f ± %.2f | |\n", (long long)D, sd.mean, sd.sd);
  std::printf("peak resident memory: %.2f GiB\n", peak_gib);
  return 0;
}

}  // namespace lamina
