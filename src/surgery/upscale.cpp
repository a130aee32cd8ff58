#include "surgery/upscale.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
#include "surgery/recipe_tokenizer.h"

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
  std::string out_name, src_name;  // src_name: the name parameters filter on
  // Split Mixtral experts fused on the way (mergekit reads them as transformers v5 does): the
  // source tensors whose bytes, in order, make the output; empty: src_name itself.
  std::vector<std::string> parts;
  // tokenizer_source: the source row of each output row of embed_tokens / lm_head (-1: zeros);
  // null: rows as stored.
  const std::vector<int64_t>* rows = nullptr;
  size_t source;
  Shape shape;
  DType src_dtype, compute_dtype, out_dtype;  // mergekit: read into `dtype`, write `out_dtype`
  std::optional<double> scale;                // none: the tensor is not multiplied at all
};

const char* kLayerPrefix = "model.layers.";

// The split-layout tensors of source layer `layer` that make the fused-layout tensor `rest`
// (transformers v5's checkpoint conversion, which mergekit 0.1.5 applies when it reads): the
// router is renamed; gate_up_proj [E, 2I, H] is, per expert, w1 [I, H] then w3 [I, H];
// down_proj [E, H, I] is every expert's w2 [H, I]. Empty for tensors the layouts share.
std::vector<std::string> split_parts(int64_t layer, const std::string& rest, int64_t experts) {
  const std::string p = kLayerPrefix + std::to_string(layer) + ".block_sparse_moe.";
  std::vector<std::string> out;
  if (rest == "mlp.gate.weight") out.push_back(p + "gate.weight");
  for (int64_t e = 0; e < experts; ++e) {
    const std::string q = p + "experts." + std::to_string(e) + ".";
    if (rest == "mlp.experts.gate_up_proj")
      out.insert(out.end(), {q + "w1.weight", q + "w3.weight"});
    if (rest == "mlp.experts.down_proj") out.push_back(q + "w2.weight");
  }
  return out;
}

// "model.layers.12.mlp.up_proj.weight" -> (12, "mlp.up_proj.weight"); -1 for non-layer tensors.
std::pair<int64_t, std::string> split_layer_name(const std::string& name) {
  if (name.rfind(kLayerPrefix, 0) != 0) return {-1, name};
  size_t a = std::strlen(kLayerPrefix), dot = name.find('.', a);
  return {std::stoll(name.substr(a, dot - a)), name.substr(dot + 1)};
}

// same_vocab: false under tokenizer_source, where every model's rows are rebuilt in the output
// tokenizer's order and vocab sizes may differ.
void check_same_shape(const Source& a, const Source& b, bool same_vocab) {
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
  if (same_vocab) differ("vocab_size", x.vocab_size, y.vocab_size);
  differ("num_local_experts", x.num_local_experts, y.num_local_experts);
  if (x.tie_word_embeddings != y.tie_word_embeddings)
    fail("slices mix tied and untied embeddings: ", a.dir, " vs ", b.dir);
  if (a.ckpt && b.ckpt && a.layout != b.layout)
    fail("slices mix Mixtral tensor layouts (split vs fused): ", a.dir, " vs ", b.dir);
}

// Rounds f32 values to `t` and back (a no-op for F32): torch's x.to(t) seen in float.
void round_to(std::vector<float>& v, DType t, std::vector<uint8_t>& scratch) {
  if (t == DType::F32) return;
  scratch.resize(v.size() * dtype_size(t));
  convert_from_f32(v.data(), scratch.data(), t, v.size());
  convert_to_f32(scratch.data(), t, v.data(), v.size());
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
         (sl.scale.empty() && sl.slice_scale.empty() && r.scale.empty() ? "" : " (scaled)") + "\n";
    out += sl.end - sl.begin;
  }
  if (!new_layers.empty()) s += "\nNew (identity) layers are listed in expanded_layers.json.\n";
  s += "\nA depth-up-scaled model needs continued pretraining before it is better than its "
       "base.\n\n";
  s += "## Recipe (mergekit YAML)\n\n```yaml\n" + r.to_yaml() + "```\n";
  return s;
}

}  // namespace

UpscaleResult upscale(const Recipe& recipe_in, const UpscaleOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (recipe_in.slices.empty()) fail("recipe has no slices");
  Recipe recipe = recipe_in;
  // 1. Sources: every model once (base_model and the tokenizer source too); config, checkpoint,
  // layout.
  std::vector<Source> sources;
  std::map<std::string, size_t> index;
  auto source_of = [&](const std::string& dir, bool weights) {
    auto it = index.find(dir);
    if (it == index.end()) {
      Source s;
      s.dir = dir;
      s.cfg = ModelConfig::load(dir);
      it = index.emplace(dir, sources.size()).first;
      sources.push_back(std::move(s));
    }
    Source& s = sources[it->second];
    if (weights && !opt.config_only && !s.ckpt) {
      s.ckpt = std::make_unique<Checkpoint>(dir);
      s.layout = detect_moe_layout(s.cfg, *s.ckpt);
    }
    return it->second;
  };
  std::vector<size_t> slice_source;
  for (auto& sl : recipe.slices) {
    slice_source.push_back(source_of(sl.model, true));
    // The models: form: the whole model.
    if (sl.end == kAllLayers) sl.end = sources[slice_source.back()].cfg.num_hidden_layers;
  }
  const Source& donor = sources[source_of(recipe.donor(), false)];
  // 2. Validation, all before the first byte is written.
  for (size_t i = 0; i < recipe.slices.size(); ++i) {
    auto& sl = recipe.slices[i];
    const auto& src = sources[slice_source[i]];
    if (sl.begin < 0 || sl.end > src.cfg.num_hidden_layers || sl.begin >= sl.end)
      fail("slices[", i, "]: layer_range [", sl.begin, ", ", sl.end, "] is out of bounds for ",
           src.dir, " (", src.cfg.num_hidden_layers, " layers; the end is exclusive)");
    check_same_shape(sources[slice_source[0]], src, recipe.tokenizer_source.empty());
  }
  // mergekit takes config.json from base_model, whatever its shape: a donor of another shape
  // would describe tensors the output does not have.
  check_same_shape(sources[slice_source[0]], donor, recipe.tokenizer_source.empty());
  const Source& first = sources[slice_source.front()];
  const size_t last = slice_source.back();
  const VocabPlan vocab = plan_vocabulary(recipe);
  ModelConfig out_cfg = donor.cfg;
  if (vocab.size >= 0) out_cfg.vocab_size = vocab.size;  // mergekit _update_config_vocab
  out_cfg.num_hidden_layers = recipe.num_layers();
  // The written dtype: --dtype, else out_dtype, else dtype (mergekit _model_out_config).
  const std::optional<DType> out_dtype = opt.dtype          ? opt.dtype
                                         : recipe.out_dtype ? recipe.out_dtype
                                                            : recipe.dtype;
  if (out_dtype) out_cfg.torch_dtype = *out_dtype;
  // Output layer -> (slice, source layer, t): t runs 0..1 over each slice's layers (mergekit
  // plan_slice: i / (n - 1), 1 for a one-layer slice) and places a gradient's value.
  struct LayerFrom {
    size_t slice;
    int64_t layer;
    double t;
  };
  std::vector<LayerFrom> layer_from;
  for (size_t i = 0; i < recipe.slices.size(); ++i) {
    const int64_t n = recipe.slices[i].end - recipe.slices[i].begin;
    for (int64_t j = 0; j < n; ++j)
      layer_from.push_back(
          {i, recipe.slices[i].begin + j, n > 1 ? double(j) / double(n - 1) : 1.0});
  }
  // Per-layer config lists follow their layers: output layer i is its source layer's type
  // (Gemma's sliding / full attention and the RoPE that goes with it; Qwen's layer_types).
  if (out_cfg.raw.contains("layer_types") || !out_cfg.sliding_layers.empty()) {
    nlohmann::json types = nlohmann::json::array();
    out_cfg.sliding_layers.clear();
    for (const LayerFrom& lf : layer_from) {
      const ModelConfig& sc = sources[slice_source[lf.slice]].cfg;
      const auto& st = sc.raw.contains("layer_types") ? sc.raw["layer_types"] : nlohmann::json();
      if (!sc.sliding_layers.empty())
        out_cfg.sliding_layers.push_back(sc.sliding_layers[size_t(lf.layer)]);
      if (st.is_array() && int64_t(st.size()) == sc.num_hidden_layers)
        types.push_back(st[size_t(lf.layer)]);
      else if (!sc.sliding_layers.empty())
        types.push_back(sc.sliding_layers[size_t(lf.layer)] ? "sliding_attention"
                                                            : "full_attention");
    }
    if (int64_t(types.size()) == out_cfg.num_hidden_layers)
      out_cfg.raw["layer_types"] = types;
    else
      out_cfg.raw.erase("layer_types");
  }
  // mergekit's parameter precedence for one slice: the source's, the slice's, the recipe's.
  auto settings = [&](size_t slice) {
    const SliceSource& sl = recipe.slices[slice];
    return std::vector<const ScaleSetting*>{&sl.scale, &sl.slice_scale, &recipe.scale};
  };
  std::vector<Item> items;
  if (!opt.config_only) {
    // mergekit writes Mixtral in transformers v5's fused layout whatever the input's.
    const MoeLayout out_layout = recipe.fused_moe_output ? MoeLayout::Fused : first.layout;
    for (auto& spec : model_tensor_specs(out_cfg, out_layout)) {
      auto [layer, rest] = split_layer_name(spec.name);
      Item it;
      it.out_name = spec.name;
      if (layer >= 0) {
        const LayerFrom& f = layer_from[size_t(layer)];
        it.source = slice_source[f.slice];
        it.src_name = kLayerPrefix + std::to_string(f.layer) + "." + rest;
        it.scale = scale_for(settings(f.slice), it.src_name, f.t);
      } else {
        // mergekit plan_module: embeddings from the first slice's model with its parameters,
        // final norm and lm_head from the last's, both at t = 0.
        const bool pre = spec.name == "model.embed_tokens.weight";
        const size_t slice = pre ? 0 : recipe.slices.size() - 1;
        it.source = pre ? slice_source.front() : last;
        it.src_name = spec.name;
        it.scale = scale_for(settings(slice), it.src_name, 0.0);
        if (spec.name == "model.embed_tokens.weight" || spec.name == "lm_head.weight")
          if (auto r = vocab.rows.find(sources[it.source].dir); r != vocab.rows.end())
            it.rows = &r->second;
      }
      const Source& s = sources[it.source];
      Shape expect = spec.shape;  // [V, H] of the source's own vocabulary when rows move
      if (it.rows) expect[0] = s.cfg.vocab_size;
      if (layer >= 0 && s.layout != out_layout)
        it.parts = split_parts(layer_from[size_t(layer)].layer, rest, out_cfg.num_local_experts);
      // Each part is one row block of the output: [E, H] for the router, [I, H] / [H, I] for
      // one expert's projection.
      Shape part_shape = spec.shape;
      if (it.parts.size() > 1) part_shape.erase(part_shape.begin());
      if (it.parts.size() > 1 && rest == "mlp.experts.gate_up_proj") part_shape[0] /= 2;
      std::optional<DType> part_dtype;
      for (const std::string& name : it.parts.empty() ? std::vector{it.src_name} : it.parts) {
        const TensorInfo& info = s.ckpt->info(name);
        if (info.shape != (it.parts.empty() ? expect : part_shape))
          fail(s.ckpt->file_of(name), ": tensor '", name, "' has shape ", shape_str(info.shape),
               ", expected ", shape_str(it.parts.empty() ? expect : part_shape));
        if (part_dtype && info.dtype != *part_dtype)
          fail(s.ckpt->file_of(name), ": tensor '", name, "' is ", dtype_name(info.dtype),
               ", the other experts of its layer ", dtype_name(*part_dtype));
        part_dtype = info.dtype;
      }
      it.shape = spec.shape;
      it.src_dtype = *part_dtype;
      it.compute_dtype = recipe.dtype.value_or(it.src_dtype);
      it.out_dtype = out_dtype.value_or(it.compute_dtype);
      items.push_back(std::move(it));
    }
  }
  // 3. Write into a temporary directory, renamed into place at the end. Only now is there
  // anything to say: a refused recipe gets its one error line alone.
  if (opt.progress) std::fprintf(stderr, "%s\n", recipe.description.c_str());
  enable_interrupt_polling();
  OutputDir out(opt.out, opt.force);
  write_tokenizer(recipe, vocab.dir, out.path());
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
    std::vector<float> permuted;
    std::vector<uint8_t> buf, round_buf;
    uint64_t done = 0;
    for (auto& it : items) {
      throw_if_interrupted();
      const Checkpoint& ck = *sources[it.source].ckpt;
      size_t n = 1;
      for (int64_t d : it.shape) n *= size_t(d);
      const size_t out_bytes = n * dtype_size(it.out_dtype);
      if (!it.scale && it.parts.empty() && !it.rows && it.compute_dtype == it.src_dtype &&
          it.out_dtype == it.src_dtype) {
        w.copy_from(it.out_name, ck.file(it.src_name), ck.info(it.src_name));  // in-kernel copy
      } else {
        // The source values (every part, in order) as f32: exact for f32, bf16 and f16.
        f32.clear();
        for (const std::string& name : it.parts.empty() ? std::vector{it.src_name} : it.parts) {
          Tensor t = ck.get(name);
          f32.resize(f32.size() + size_t(t.numel()));
          convert_to_f32(t.data, t.dtype, f32.data() + f32.size() - size_t(t.numel()),
                         size_t(t.numel()));
          ck.release(name);
        }
        if (it.rows) {  // tokenizer_source: rows in the output tokenizer's order
          const size_t h = size_t(it.shape[1]);
          permuted.assign(n, 0.0f);
          for (size_t r = 0; r < it.rows->size(); ++r)
            if (int64_t from = (*it.rows)[r]; from >= 0)
              std::copy_n(f32.begin() + ptrdiff_t(size_t(from) * h), h,
                          permuted.begin() + ptrdiff_t(r * h));
          f32.swap(permuted);
        }
        buf.resize(out_bytes);
        if (it.scale && *it.scale == 0.0 && recipe.exact_zeros) {
          std::memset(buf.data(), 0, out_bytes);  // exact +0.0 (LLaMA-Pro identity blocks)
        } else {
          // As torch does it: x.to(dtype), then x * scale in float arithmetic rounded to dtype
          // once (CPU kernels compute bf16/f16 products in float), then .to(out_dtype).
          round_to(f32, it.compute_dtype, round_buf);
          if (it.scale) {
            const float s = float(*it.scale);
            for (auto& v : f32) v = v * s;
            round_to(f32, it.compute_dtype, round_buf);
          }
          convert_from_f32(f32.data(), buf.data(), it.out_dtype, n);
        }
        w.write(it.out_name, buf.data(), out_bytes);
      }
      if (it.parts.empty()) ck.release(it.src_name);
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
