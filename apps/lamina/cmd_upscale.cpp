// lamina upscale: SOLAR depth up-scaling, mergekit passthrough recipes, LLaMA-Pro block expansion.
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/safetensors.h"
#include "surgery/upscale.h"

namespace lamina {

int cmd_upscale(int argc, char** argv) {
  Args a("upscale",
         "Build a deeper model from layers of existing ones, streaming tensors from the inputs "
         "(bounded memory).\n"
         "Default: SOLAR's depth up-scaling of --model (layers [0, n-m) then [m, n)). --config "
         "runs a mergekit\n"
         "passthrough YAML recipe; --expand-every / --target-layers run LLaMA-Pro block expansion.",
         {{"model", "DIR", "base model (SOLAR and LLaMA-Pro modes)", ""},
          {"config", "YAML",
           "mergekit passthrough recipe, as mergekit 0.1.5 (slices or models, scale, dtype, "
           "base_model, tokenizer_source, chat_template; docs/MERGEKIT.md)",
           ""},
          {"out", "DIR", "output model directory", kRequired},
          {"drop", "M", "SOLAR: layers dropped from each copy (n from config.json)", "8"},
          {"expand-every", "K", "LLaMA-Pro: insert an identity copy after every K-th layer", ""},
          {"target-layers", "N", "LLaMA-Pro: expand evenly to N layers", ""},
          {"dtype", "f32|bf16|f16", "output dtype (default: the recipe's, else as stored)", ""},
          {"shard-size", "SIZE", "largest safetensors shard", "5GB"},
          {"config-only", "",
           "write config, tokenizer and model card without weights (shape arithmetic)", ""},
          {"force", "", "replace an existing output directory", ""}});
  if (!a.parse(argc, argv)) return 0;
  const bool expand = a.given("expand-every") || a.given("target-layers");
  if (a.given("config") + a.given("model") != 1)
    fail("give --model DIR (SOLAR / LLaMA-Pro) or --config recipe.yaml");
  if (a.given("config") && (expand || a.given("drop")))
    fail("--config takes the whole recipe from the YAML; drop --drop/--expand-every");
  if (a.given("expand-every") && a.given("target-layers"))
    fail("give --expand-every or --target-layers, not both");
  UpscaleOptions opt;
  opt.out = a.str("out");
  opt.force = a.flag("force");
  opt.config_only = a.flag("config-only");
  opt.shard_bytes = parse_byte_size(a.str("shard-size"), "--shard-size");
  if (a.given("dtype")) opt.dtype = parse_dtype(a.str("dtype"), "--dtype");
  Recipe r;
  if (a.given("config")) {
    r = parse_mergekit_yaml(a.str("config"));
  } else {
    const int64_t n = ModelConfig::load(a.str("model")).num_hidden_layers;
    if (expand) {
      int64_t k = a.given("expand-every") ? a.integer("expand-every")
                                          : expansion_interval(n, a.integer("target-layers"));
      r = expansion_recipe(a.str("model"), n, k);
      opt.new_layers = expansion_new_layers(n, k);
    } else {
      r = solar_recipe(a.str("model"), n, a.integer("drop"));
    }
  }
  auto res = upscale(r, opt);  // says r.description once everything is checked
  std::printf("wrote %s: %s, %lld layers, %s parameters", opt.out.c_str(),
              arch_name(res.config.arch), (long long)res.config.num_hidden_layers,
              format_count(double(res.config.param_count())).c_str());
  if (!opt.config_only)
    std::printf(", %lld tensors, %s in %zu shard(s), %.1f s (%s/s), peak memory %s",
                (long long)res.tensors, format_bytes(double(res.bytes)).c_str(), res.shards,
                res.seconds, format_bytes(double(res.bytes) / std::max(res.seconds, 1e-9)).c_str(),
                format_bytes(double(peak_rss_bytes())).c_str());
  std::printf("\n");
  return 0;
}

}  // namespace lamina
