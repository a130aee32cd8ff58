// Prompt-forward and decode throughput of a model directory or GGUF file; prints one JSON line
// (with the CPU and the quantized-product kernel chosen for it).
// usage: lamina_bench_forward MODEL_DIR|FILE.gguf PROMPT_TOKENS DECODE_TOKENS REPEATS
//        [f32|bf16|q8_0|q4_0]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/quant_dot.h"
#include "model/gguf_model.h"
#include "model/model.h"

using namespace lamina;
using clk = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: %s MODEL_DIR PROMPT_TOKENS DECODE_TOKENS REPEATS [f32|bf16|q8_0|q4_0]\n",
                 argv[0]);
    return 2;
  }
  try {
    LoadOptions opt;
    if (argc > 5) opt.dtype = parse_dtype(argv[5], "dtype", true);
    auto m = is_gguf_file(argv[1]) ? load_gguf_model(argv[1], opt) : Model::load(argv[1], opt);
    const int64_t T = std::atoll(argv[2]), D = std::atoll(argv[3]), R = std::atoll(argv[4]);
    const int64_t V = m->config().vocab_size;
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 7919 + 13) % V);
    std::vector<float> logits(static_cast<size_t>(V));
    double best_prompt = 1e30, best_decode = 1e30;
    for (int64_t r = 0; r < R + 1; ++r) {  // first round warms up (primitive creation, page-in)
      KVCache c = m->new_cache(T + D);
      auto t0 = clk::now();
      m->forward(ids.data(), T, c, logits.data(), false);
      double p = std::chrono::duration<double>(clk::now() - t0).count();
      int32_t next = 1;
      t0 = clk::now();
      for (int64_t d = 0; d < D; ++d) {
        m->forward(&next, 1, c, logits.data(), false);
        next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      double dt = std::chrono::duration<double>(clk::now() - t0).count();
      if (r > 0) best_prompt = std::min(best_prompt, p), best_decode = std::min(best_decode, dt);
    }
    std::printf(
        "{\"prompt_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, \"threads\": %d, "
        "\"cpu\": \"%s\", \"quant_kernel\": \"%s\"}\n",
        double(T) / best_prompt, double(D) / best_decode, num_threads(), cpu_description().c_str(),
        quant_kernel_name(default_quant_kernel()));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
