// Test driver for the gradient check: one forward/backward step of TrainGraph on a batch given as
// JSON, writing the loss and every gradient (ParamStore order) for tests/reference/test_grads.py.
// usage: lamina_train_probe MODEL_DIR BATCH.json OUT_PREFIX
//   BATCH.json: {"B":..,"T":..,"tokens":[..],"targets":[..],"weights":[..],"aux_coef":..}
//   writes OUT_PREFIX.grads.npy (flat F32), OUT_PREFIX.json (loss parts, tensor names/offsets)
//   "base_dtype": "bf16"|"q8_0"|"q4_0" keeps the frozen base in that type (with "lora").
//   "gguf": FILE trains over that GGUF file's tensors as the frozen base instead.
//   "recompute", "recompute_bf16", "mlp_chunk_rows": activation recomputation and its settings.
//   "lora_dropout" (with "dropout_key"): LoRA dropout on the adapters' input.
//   Tensors kept outside the F32 buffer are listed with offset -1 and their dtype.
//   With "adamw": {"lr", "beta1", "beta2", "eps", "weight_decay", "clip", "steps"} it then runs
//   that many full steps (zero grads, forward/backward, clip, AdamW) on the same batch and writes
//   OUT_PREFIX.params.npy.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/npy.h"
#include "io/output_dir.h"
#include "train/dpo.h"
#include "train/lora.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

using namespace lamina;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR BATCH.json OUT_PREFIX\n", argv[0]);
    return 2;
  }
  try {
    auto j = nlohmann::json::parse(read_text_file(argv[2]));
    // "base_dtype": the whole base kept frozen in that type (with "lora"), as --base-dtype does.
    std::optional<FrozenBase> base;
    if (j.contains("base_dtype"))
      base = FrozenBase{
          j["base_dtype"] == "nf4" ? DType::NF4 : parse_dtype(j["base_dtype"], "base_dtype", true),
          [](const TensorSpec&) { return true; }};
    // "gguf": a GGUF file as the frozen base instead of MODEL_DIR's weights (with "lora").
    ParamStore p = j.contains("gguf")
                       ? ParamStore::from_gguf(read_gguf_checkpoint(j["gguf"].get<std::string>()))
                       : ParamStore::load(argv[1], base);
    Batch b;
    b.B = j["B"];
    b.T = j["T"];
    b.tokens = j["tokens"].get<std::vector<int32_t>>();
    b.targets = j["targets"].get<std::vector<int32_t>>();
    b.weights = j["weights"].get<std::vector<float>>();
    double wsum = 0;
    for (size_t i = 0; i < b.targets.size(); ++i)
      if (b.targets[i] >= 0) wsum += b.weights[i];
    if (j.contains("precision")) p.set_compute_dtype(parse_dtype(j["precision"], "precision"));
    if (j.contains("lora")) {
      // Adapters with a random (not zero) B so that A's gradient is not trivially zero.
      auto& lj = j["lora"];
      LoraConfig lc;
      lc.r = lj["r"];
      lc.alpha = lj["alpha"];
      lc.targets = lj["targets"].get<std::vector<std::string>>();
      add_lora(p, lc);
      std::mt19937 rng(5);
      std::normal_distribution<float> nd(0.f, lj.value("b_std", 0.1f));
      for (size_t i = 0; i < p.specs.size(); ++i)
        if (p.specs[i].name.find("lora_B") != std::string::npos)
          for (int64_t k = 0; k < p.numel(i); ++k) p.param(i)[k] = nd(rng);
      p.refresh_compute();
      if (lj.contains("save")) save_lora_adapter(p, lc, lj["save"], argv[1]);
    }
    // "dump_stored": the raw bytes of every tensor kept outside the F32 buffer, as
    // OUT_PREFIX.stored.NAME (the frozen base's blocks, for byte-for-byte checks).
    if (j.value("dump_stored", false))
      for (size_t i = 0; i < p.specs.size(); ++i)
        if (!p.has_param(i))
          write_file_atomic(
              std::string(argv[3]) + ".stored." + p.specs[i].name,
              std::string(static_cast<const char*>(p.stored[i].data), p.stored[i].nbytes()));
    TrainGraph g(p);
    g.set_recompute(j.value("recompute", false));
    g.set_recompute_bf16_inputs(j.value("recompute_bf16", false));
    g.set_mlp_chunk_rows(j.value("mlp_chunk_rows", int64_t(0)));
    if (j.contains("lora_dropout")) {  // on the adapters' input, masks keyed by dropout_key
      p.lora_dropout = j["lora_dropout"];
      g.set_dropout_key(j.value("dropout_key", uint64_t(7)));
    }
    p.zero_grads();
    if (j.contains("dpo")) {
      // One DPO step over the given pairs: each a row [chosen | rejected | padding].
      auto& dj = j["dpo"];
      DpoConfig dc;
      dc.loss = parse_dpo_loss(dj["loss"]);
      dc.beta = dj["beta"];
      dc.label_smoothing = dj.value("label_smoothing", 0.0);
      dc.rpo_alpha = dj.value("rpo_alpha", 0.0);
      const int64_t T = dj["T"];
      std::vector<TrainRow> rows;
      for (auto& pr : dj["pairs"]) {
        TrainRow r;
        for (const char* side : {"chosen", "rejected"}) {
          auto ids = pr[side].get<std::vector<int32_t>>();
          auto mask = pr[std::string(side) + "_mask"].get<std::vector<float>>();
          r.tokens.insert(r.tokens.end(), ids.begin(), ids.end() - 1);
          const std::string tk =
              std::string(side) + "_targets";  // optional: labels other than ids[1:]
          if (pr.contains(tk)) {
            auto t = pr[tk].get<std::vector<int32_t>>();
            r.targets.insert(r.targets.end(), t.begin(), t.end());
          } else {
            r.targets.insert(r.targets.end(), ids.begin() + 1, ids.end());
          }
          r.weights.insert(r.weights.end(), mask.begin() + 1, mask.end());
          r.segments.push_back(int32_t(ids.size() - 1));
        }
        const int64_t fill = T - int64_t(r.tokens.size());
        r.tokens.insert(r.tokens.end(), size_t(fill), 0);
        r.targets.insert(r.targets.end(), size_t(fill), -1);
        r.weights.insert(r.weights.end(), size_t(fill), 0.0f);
        if (fill > 0) r.segments.push_back(int32_t(fill));
        r.extra = pr["ref"].get<std::vector<float>>();
        rows.push_back(r);
      }
      DpoObjective obj(dc);
      auto res = obj.run(g, {rows}, T, 0.0, true);
      write_npy(std::string(argv[3]) + ".grads.npy", p.grads);
      nlohmann::json out = {{"loss", res.loss}, {"metrics", res.metrics}};
      for (size_t i = 0; i < p.specs.size(); ++i)
        out["tensors"].push_back({{"name", p.specs[i].name},
                                  {"offset", p.has_param(i) ? int64_t(p.offset[i]) : -1},
                                  {"numel", p.numel(i)}});
      write_file_atomic(std::string(argv[3]) + ".json", out.dump());
      return 0;
    }
    StepStats st = g.step(b, wsum, j.value("aux_coef", 0.0));
    write_npy(std::string(argv[3]) + ".grads.npy", p.grads);
    write_npy(std::string(argv[3]) + ".params.npy", p.params);
    nlohmann::json out = {
        {"loss", st.loss_sum / wsum}, {"aux_loss", st.aux_loss}, {"tokens", st.tokens}};
    for (size_t i = 0; i < p.specs.size(); ++i)
      out["tensors"].push_back({{"name", p.specs[i].name},
                                {"offset", p.has_param(i) ? int64_t(p.offset[i]) : -1},
                                {"numel", p.numel(i)},
                                {"dtype", p.has_param(i) ? "F32" : dtype_name(p.stored[i].dtype)}});
    out["logprobs"] = g.token_logprobs();
    if (j.contains("adamw")) {
      auto& o = j["adamw"];
      AdamWConfig ac{o["lr"], o["beta1"], o["beta2"], o["eps"], o["weight_decay"]};
      AdamW opt(p, ac);
      std::vector<double> norms;
      for (int s = 0; s < o["steps"].get<int>(); ++s) {
        if (s > 0) {
          p.zero_grads();
          g.step(b, wsum, j.value("aux_coef", 0.0));
        }
        norms.push_back(clip_grad_norm(p, o["clip"]));
        if (!opt.update(ac.lr)) lamina::fail("train_probe: non-finite update");
        p.refresh_compute();
      }
      out["grad_norms"] = norms;
      write_npy(std::string(argv[3]) + ".params.npy", p.params);
    }
    write_file_atomic(std::string(argv[3]) + ".json", out.dump());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
