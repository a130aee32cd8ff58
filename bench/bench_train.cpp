// Training throughput (forward + backward + AdamW) of a model directory; prints one JSON line.
// usage: lamina_bench_train MODEL_DIR BATCH SEQ_LEN STEPS [f32|bf16] [recompute]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/progress.h"
#include "kernels/matmul.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

using namespace lamina;

int main(int argc, char** argv) {
  if (argc < 5 || argc > 7) {
    std::fprintf(stderr, "usage: %s MODEL_DIR BATCH SEQ_LEN STEPS [f32|bf16] [recompute]\n",
                 argv[0]);
    return 2;
  }
  try {
    ParamStore p = ParamStore::load(argv[1]);
    if (argc >= 6) p.set_compute_dtype(parse_dtype(argv[5], "precision"));
    const int64_t B = std::atoll(argv[2]), T = std::atoll(argv[3]), steps = std::atoll(argv[4]);
    const int64_t V = p.cfg.vocab_size;
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t <= T; ++t)
        rows[size_t(b)].push_back(int32_t((b * 7919 + t * 104729 + 13) % V));
    Batch batch = Batch::language_model(rows);
    TrainGraph g(p);
    g.set_recompute(argc == 7 && std::string(argv[6]) == "recompute");
    AdamW opt(p, {1e-4, 0.9, 0.95, 1e-8, 0.0});
    double best = 1e30, total = 0;
    for (int64_t s = 0; s < steps + 1; ++s) {  // step 0 warms up (primitive creation, first touch)
      auto t0 = std::chrono::steady_clock::now();
      p.zero_grads();
      g.step(batch, double(B * T), 0.0);
      clip_grad_norm(p, 1.0);
      if (!opt.update(1e-4)) return 1;
      p.refresh_compute();
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s > 0) best = std::min(best, dt), total += dt;
    }
    std::printf(
        "{\"tokens_per_s\": %.2f, \"best_tokens_per_s\": %.2f, \"peak_rss_mb\": %.1f, \"threads\": "
        "%d}\n",
        double(B * T * steps) / total, double(B * T) / best, double(peak_rss_bytes()) / 1e6,
        num_threads());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
