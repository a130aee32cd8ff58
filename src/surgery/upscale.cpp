#include "surgery/upscale.h"

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "tokenizer/tokenizer_files.h"

namespace lamina {
namespace {

struct Source {
  std::string dir;
  ModelConfig cfg;
  std::unique_ptr<Checkpoint> ckpt;
  MoeLayout layout = MoeLayout::Split;
};

// One output tensor: where its bytes come from and what happens to them on the way.
struct Item {
  std::string out_name, src_name;
  size_t source;
  Shape shape;
  DType src_dtype, out_dtype;
  double scale;
};

const char* kLayerPrefix = "model.layers.";

// "model.layers.12.mlp.up_proj.weight" -> (12, "mlp.up_proj.weight"); -1 for non-layer tensors.
std::pair<int64_t, std::string> split_layer_name(const std::string& name) {
  if (name.rfind(kLayerPrefix, 0) != 0) return {-1, name};
  size_t a = std::strlen(kLayerPrefix), dot = name.find('.', a);
  return {std::stoll(name.substr(a, dot - a)), name.substr(dot + 1)};
}

void check_same_shape(const Source& a, const Source& b) {
  auto& x = a.cfg;
  auto& y = b.cfg;
  auto differ = [&](const char* what, int64_t u, int64_t v) {
    if (u != v)
      fail("slices mix models of different shape: ", a.dir, " has ", what, " ", u, ", ", b.dir,
           " has ", v);
  };
  if (x.arch != y.arch)
    fail("slices mix architectures: ", a.dir, " is ", arch_name(x.arch), ", ", b.dir, " is ",
         arch_name(y.arch));
  differ("hidden_size", x.hidden_size, y.hidden_size);
  differ("intermediate_size", x.intermediate_size, y.intermediate_size);
  differ("num_attention_heads", x.num_attention_heads, y.num_attention_heads);
  differ("num_key_value_heads", x.num_key_value_heads, y.num_key_value_heads);
  differ("head_dim", x.head_dim, y.head_dim);
  differ("vocab_size", x.vocab_size, y.vocab_size);
  differ("num_local_experts", x.num_local_experts, y.num_local_experts);
  if (x.tie_word_embeddings != y.tie_word_embeddings)
    fail("slices mix tied and untied embeddings: ", a.dir, " vs ", b.dir);
  if (a.ckpt && b.ckpt && a.layout != b.layout)
    fail("slices mix Mixtral tensor layouts (split vs fused): ", a.dir, " vs ", b.dir);
}

std::string model_card(const Recipe& r, const ModelConfig& c,
                       const std::vector<int64_t>& new_layers) {
  std::string s =
      "---\nlibrary_name: transformers\ntags:\n- lamina\n- merge\n- depth-up-scaling\n---\n\n";
  s += "# Layer surgery with lamina\n\n" + r.description + "\n\n";
  s += "Result: " + std::string(arch_name(c.arch)) + ", " + std::to_string(c.num_hidden_layers) +
       " layers, " + std::to_string(c.param_count()) + " parameters.\n\n";
  s += "Output layer mapping (output layers: source model, source layers):\n\n";
  int64_t out = 0;
  for (auto& sl : r.slices) {
    s += "- " + std::to_string(out) + ".." + std::to_string(out + sl.end - sl.begin - 1) + ": " +
         sl.model + " layers " + std::to_string(sl.begin) + ".." + std::to_string(sl.end - 1) +
         (sl.scale.empty() ? "" : " (scaled)") + "\n";
    out += sl.end - sl.begin;
  }
  if (!new_layers.empty()) s += "\nNew (identity) layers are listed in expanded_layers.json.\n";
  s += "\nA depth-up-scaled model needs continued pretraining before it is better than its "
       "base.\n\n";
  s += "## Recipe (mergekit YAML)\n\n```yaml\n" + r.to_yaml() + "```\n";
  return s;
}

}  // namespace

UpscaleResult upscale(const Recipe& recipe, const UpscaleOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (recipe.slices.empty()) fail("recipe has no slices");
  // 1. Sources: every model once; config, checkpoint, layout.
  std::vector<Source> sources;
  std::map<std::string, size_t> index;
  std::vector<size_t> slice_source;
  for (auto& sl : recipe.slices) {
    auto it = index.find(sl.model);
    if (it == index.end()) {
      Source s;
      s.dir = sl.model;
      s.cfg = ModelConfig::load(sl.model);
      if (!opt.config_only) {
        s.ckpt = std::make_unique<Checkpoint>(sl.model);
        s.layout = detect_moe_layout(s.cfg, *s.ckpt);
      }
      it = index.emplace(sl.model, sources.size()).first;
      sources.push_back(std::move(s));
    }
    slice_source.push_back(it->second);
  }
  // 2. Validation, all before the first byte is written.
  for (size_t i = 0; i < recipe.slices.size(); ++i) {
    auto& sl = recipe.slices[i];
    const auto& src = sources[slice_source[i]];
    if (sl.begin < 0 || sl.end > src.cfg.num_hidden_layers || sl.begin >= sl.end)
      fail("slices[", i, "]: layer_range [", sl.begin, ", ", sl.end, "] is out of bounds for ",
           src.dir, " (", src.cfg.num_hidden_layers, " layers; the end is exclusive)");
    check_same_shape(sources[slice_source[0]], src);
  }
  const Source& first = sources[slice_source.front()];
  const size_t last = slice_source.back();
  ModelConfig out_cfg = first.cfg;
  out_cfg.num_hidden_layers = recipe.num_layers();
  std::optional<DType> dtype = opt.dtype ? opt.dtype : recipe.dtype;
  if (dtype) out_cfg.torch_dtype = *dtype;
  // Output layer -> (slice, source layer).
  std::vector<std::pair<size_t, int64_t>> layer_from;
  for (size_t i = 0; i < recipe.slices.size(); ++i)
    for (int64_t l = recipe.slices[i].begin; l < recipe.slices[i].end; ++l)
      layer_from.push_back({i, l});
  std::vector<Item> items;
  if (!opt.config_only) {
    for (auto& spec : model_tensor_specs(out_cfg, first.layout)) {
      auto [layer, rest] = split_layer_name(spec.name);
      Item it;
      it.out_name = spec.name;
      it.scale = 1.0;
      if (layer >= 0) {
        auto [slice, src_layer] = layer_from[size_t(layer)];
        it.source = slice_source[slice];
        it.src_name = kLayerPrefix + std::to_string(src_layer) + "." + rest;
        it.scale = scale_for(recipe.slices[slice].scale, it.src_name);
      } else {
        // mergekit: embeddings from the first slice's model, final norm and lm_head from the
        // last's.
        it.source = spec.name == "model.embed_tokens.weight" ? slice_source.front() : last;
        it.src_name = spec.name;
      }
      const Source& s = sources[it.source];
      const TensorInfo& info = s.ckpt->info(it.src_name);
      if (info.shape != spec.shape)
        fail(s.ckpt->file_of(it.src_name), ": tensor '", it.src_name, "' has shape ",
             shape_str(info.shape), ", expected ", shape_str(spec.shape));
      it.shape = spec.shape;
      it.src_dtype = info.dtype;
      it.out_dtype = dtype.value_or(info.dtype);
      items.push_back(std::move(it));
    }
  }
  // 3. Write into a temporary directory, renamed into place at the end.
  enable_interrupt_polling();
  OutputDir out(opt.out, opt.force);
  copy_tokenizer_files(first.dir, out.path());
  out_cfg.save(out.path() + "/config.json");
  write_file_atomic(out.path() + "/README.md", model_card(recipe, out_cfg, opt.new_layers));
  write_file_atomic(out.path() + "/recipe.yaml", recipe.to_yaml());
  if (!opt.new_layers.empty()) {
    std::vector<int64_t> orig;
    for (int64_t i = 0; i < out_cfg.num_hidden_layers; ++i)
      if (std::find(opt.new_layers.begin(), opt.new_layers.end(), i) == opt.new_layers.end())
        orig.push_back(i);
    nlohmann::json j = {
        {"new_layers", opt.new_layers}, {"original_layers", orig}, {"method", "llama-pro"}};
    write_file_atomic(out.path() + "/expanded_layers.json", j.dump(2) + "\n");
  }
  UpscaleResult res;
  if (!opt.config_only) {
    std::vector<SafetensorsWriter::Planned> plan;
    for (auto& it : items) plan.push_back({it.out_name, it.out_dtype, it.shape});
    SafetensorsWriter w(out.path(), plan, opt.shard_bytes,
                        {{"format", "pt"}, {"lamina_recipe", recipe.to_yaml()}});
    Progress bar("upscale", int64_t(w.total_bytes()), "B");
    std::vector<float> f32;
    std::vector<uint8_t> buf;
    uint64_t done = 0;
    for (auto& it : items) {
      throw_if_interrupted();
      const Checkpoint& ck = *sources[it.source].ckpt;
      Tensor t = ck.get(it.src_name);
      const size_t n = size_t(t.numel()), out_bytes = n * dtype_size(it.out_dtype);
      if (it.scale == 1.0 && it.out_dtype == it.src_dtype) {
        w.copy_from(it.out_name, ck.file(it.src_name), ck.info(it.src_name));  // in-kernel copy
      } else {
        buf.resize(out_bytes);
        if (it.scale == 0.0) {
          std::memset(buf.data(), 0, out_bytes);  // exact zeros (LLaMA-Pro identity blocks)
        } else {
          f32.resize(n);
          convert_to_f32(t.data, t.dtype, f32.data(), n);
          if (it.scale != 1.0)
            for (auto& v : f32) v = float(double(v) * it.scale);
          convert_from_f32(f32.data(), buf.data(), it.out_dtype, n);
        }
        w.write(it.out_name, buf.data(), out_bytes);
      }
      ck.release(it.src_name);
      done += out_bytes;
      if (opt.progress) bar.update(int64_t(done));
    }
    w.finish();
    bar.finish();
    res.tensors = int64_t(items.size());
    res.bytes = w.total_bytes();
    res.shards = w.num_shards();
  }
  throw_if_interrupted();
  out.commit();
  res.config = out_cfg;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace lamina
