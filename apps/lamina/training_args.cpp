// Options shared by the training commands (pretrain, sft): declared once for parsing and --help.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "kernels/matmul.h"
#include "train/pretrain.h"

namespace lamina {
namespace {

// "0-7,12" -> {0, ..., 7, 12}
std::vector<int64_t> parse_layer_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');) {
    if (part.empty()) continue;
    try {
      size_t dash = part.find('-');
      int64_t a = std::stoll(part.substr(0, dash)),
              b = dash == std::string::npos ? a : std::stoll(part.substr(dash + 1));
      if (b < a) throw 0;
      for (int64_t l = a; l <= b; ++l) out.push_back(l);
    } catch (...) {
      fail("--freeze-layers: cannot read '", part, "' (e.g. 0-7,12)");
    }
  }
  return out;
}

}  // namespace

std::vector<ArgSpec> training_arg_specs() {
  return {
      {"model", "DIR", "model to train (HF directory), or a .gguf file as a frozen LoRA base",
       kRequired},
      {"tokenizer", "DIR", "with a .gguf --model: the HF directory of its tokenizer and template",
       ""},
      {"out", "DIR", "output directory", kRequired},
      {"config", "YAML", "read options from a YAML file", ""},
      {"seq-len", "T", "tokens per training sequence", "256"},
      {"batch-size", "B", "sequences per micro-batch", "4"},
      {"grad-accum", "N", "micro-batches per optimizer step", "1"},
      {"max-steps", "N", "optimizer steps (0: --epochs passes over the data)", "0"},
      {"epochs", "N", "passes over the training data", "1"},
      {"lr", "LR", "peak learning rate", "1e-4"},
      {"schedule", "NAME", "constant, linear or cosine", "cosine"},
      {"warmup-ratio", "R", "fraction of steps warming up linearly", "0"},
      {"min-lr-ratio", "R", "floor of the decay as a fraction of --lr", "0"},
      {"weight-decay", "W", "AdamW decoupled weight decay (matrices only)", "0"},
      {"beta1", "B1", "AdamW beta1", "0.9"},
      {"beta2", "B2", "AdamW beta2", "0.999"},
      {"eps", "E", "AdamW epsilon", "1e-8"},
      {"clip", "C", "clip gradients to this global norm (0: off)", "1"},
      {"aux-loss-coef", "C",
       "Mixtral load-balancing loss weight (default: config's router_aux_loss_coef when its "
       "output_router_logits is true, else 0, as transformers)",
       ""},
      {"val-fraction", "F", "held-out fraction of the sequences for eval loss", "0.05"},
      {"eval-every", "N", "evaluate every N steps (and at the end)", "0"},
      {"eval-batches", "N", "at most N batches per evaluation (0: all)", "0"},
      {"save-every", "N", "checkpoint every N steps (and at the end)", "0"},
      {"keep", "K", "keep the newest K checkpoints", "2"},
      {"seed", "S", "data order seed", "42"},
      {"resume", "", "continue from the newest checkpoint in --out", ""},
      {"save-dtype", "f32|bf16|f16", "dtype of saved weights (default: the model's torch_dtype)",
       ""},
      {"threads", "N", "threads for the kernels", ""},
      {"lora-r", "R", "train LoRA adapters of rank R on a frozen base (checkpoints: PEFT adapters)",
       ""},
      {"lora-alpha", "A", "LoRA alpha (scale alpha/r)", "16"},
      {"lora-dropout", "P", "dropout on the adapters' input during training", "0"},
      {"lora-rslora", "", "rank-stabilised LoRA: scale alpha / sqrt(r) (PEFT's use_rslora)", ""},
      {"lora-targets", "LIST",
       "LoRA modules: q,k,v,o,gate,up,down (Mixtral: q,k,v,o,w1,w2,w3) or all", "q,v"},
      {"lora-rank-pattern", "PATTERN=R",
       "rank R for the modules PATTERN matches (PEFT's rank_pattern: a regex matching the module "
       "name or its end after a '.', e.g. 'q_proj=16', 'layers\\.0\\.self_attn\\.v_proj=2'; "
       "first match wins)",
       "", true},
      {"lora-alpha-pattern", "PATTERN=A",
       "alpha A for the modules PATTERN matches (PEFT's alpha_pattern)", "", true},
      {"recompute", "",
       "recompute each layer's activations in backward (less memory, ~1/3 more compute)", ""},
      {"recompute-dtype", "f32|bf16",
       "with --recompute: keep each layer's input in this type; bf16 halves that memory (the rerun "
       "starts from the rounded input, as checkpointing a bf16 model in transformers does)",
       "f32"},
      {"precision", "f32|bf16", "bf16: mixed precision (bf16 products, F32 masters and optimizer)",
       "f32"},
      {"base-dtype", "bf16|f16|q8_0|q4_0|nf4",
       "keep the frozen base (LoRA's, or frozen layers') in this type instead of an F32 copy: "
       "bf16/f16 used from the mapped checkpoint, q8_0/q4_0 quantized at load (ggml's blocks), "
       "nf4 QLoRA's NormalFloat (bitsandbytes' layout, double quantisation)",
       ""},
      {"freeze-layers", "LIST", "layers not trained, e.g. 0-7,12", ""},
      {"freeze-embeddings", "", "do not train the embedding, LM head and final norm", ""},
      {"only-new-layers", "", "LLaMA-Pro: train only the layers in MODEL/expanded_layers.json", ""},
      {"halt-after", "N", "stop after step N as if interrupted (to test --resume)", "0"}};
}

TrainOptions training_options(const Args& a) {
  if (a.given("threads")) set_num_threads(int(a.integer("threads")));
  TrainOptions o;
  o.model = a.str("model");
  o.tokenizer = a.str("tokenizer");
  o.out = a.str("out");
  o.seq_len = a.integer("seq-len");
  o.batch_size = a.integer("batch-size");
  o.grad_accum = a.integer("grad-accum");
  o.max_steps = a.integer("max-steps");
  o.epochs = a.integer("epochs");
  o.adam = {a.number("lr"), a.number("beta1"), a.number("beta2"), a.number("eps"),
            a.number("weight-decay")};
  o.schedule = a.str("schedule");
  o.warmup_ratio = a.number("warmup-ratio");
  o.min_lr_ratio = a.number("min-lr-ratio");
  o.clip = a.number("clip");
  if (a.given("aux-loss-coef")) o.aux_coef = a.number("aux-loss-coef");
  o.val_fraction = a.number("val-fraction");
  o.eval_every = a.integer("eval-every");
  o.eval_batches = a.integer("eval-batches");
  o.save_every = a.integer("save-every");
  o.keep = a.integer("keep");
  o.seed = uint64_t(a.integer("seed"));
  o.resume = a.flag("resume");
  o.halt_after = a.integer("halt-after");
  o.freeze_layers = parse_layer_list(a.str("freeze-layers"));
  o.freeze_embeddings = a.flag("freeze-embeddings");
  o.only_new_layers = a.flag("only-new-layers");
  o.precision = parse_dtype(a.str("precision"), "--precision");
  o.recompute = a.flag("recompute");
  o.recompute_dtype = parse_dtype(a.str("recompute-dtype"), "--recompute-dtype");
  if (a.given("recompute-dtype") && !o.recompute)
    fail(
        "--recompute-dtype: only with --recompute (it is the type of the layer inputs kept for "
        "the rerun)");
  if (a.given("base-dtype"))
    o.base_dtype = a.str("base-dtype") == "nf4"
                       ? DType::NF4
                       : parse_dtype(a.str("base-dtype"), "--base-dtype", true);
  if (a.given("lora-r")) {
    LoraConfig lc;
    lc.r = a.integer("lora-r");
    lc.rslora = a.flag("lora-rslora");
    lc.alpha = a.number("lora-alpha");
    lc.dropout = a.number("lora-dropout");
    lc.targets = parse_lora_targets(a.str("lora-targets"));
    for (auto& spec : a.all("lora-rank-pattern")) {
      auto [key, v] = parse_lora_pattern(spec, "--lora-rank-pattern");
      if (v != std::floor(v)) fail("--lora-rank-pattern '", spec, "': the rank must be an integer");
      lc.rank_pattern.push_back({key, int64_t(v)});
    }
    for (auto& spec : a.all("lora-alpha-pattern"))
      lc.alpha_pattern.push_back(parse_lora_pattern(spec, "--lora-alpha-pattern"));
    check_lora_patterns(lc, "--lora-rank-pattern/--lora-alpha-pattern");
    lc.seed = o.seed;
    o.lora = lc;
  } else {
    for (const char* k : {"lora-rank-pattern", "lora-alpha-pattern"})
      if (a.given(k)) fail("--", k, " needs --lora-r (it sets the rank or alpha of LoRA modules)");
  }
  if (a.given("save-dtype")) o.save_dtype = parse_dtype(a.str("save-dtype"), "--save-dtype");
  return o;
}

void print_training_result(const TrainResult& r) {
  std::printf("trained %lld steps: last loss %.4f", (long long)r.steps, r.last_loss);
  if (r.eval_loss >= 0) std::printf(", eval loss %.4f", r.eval_loss);
  std::printf(", peak memory %s", format_bytes(double(r.peak_rss)).c_str());
  std::printf("\n  model:   %s\n  metrics: %s\n  plot:    %s\n", r.final_dir.c_str(),
              r.metrics_file.c_str(), r.plot_file.c_str());
}

}  // namespace lamina
