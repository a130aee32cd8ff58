// Layer-surgery recipes: which source layers make up each output layer, with optional per-tensor
// scales. mergekit's `passthrough` YAML, SOLAR's depth up-scaling and LLaMA-Pro's block expansion
// all reduce to this one form.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lamina {

// One entry of mergekit's `scale` setting (mergekit 0.1.5 config.py, evaluate_setting): a filter
// and a value that is either one number or a gradient. A gradient's points are spread evenly over
// the slice's layers and interpolated linearly at t = i / (n - 1) (t = 1 for a one-layer slice,
// t = 0 for embeddings, final norm and lm_head).
struct ScaleRule {
  std::string filter;          // "" or "*": every tensor; else a substring of the tensor name
  std::vector<double> points;  // one value, or a gradient
  double at(double t) const;   // mergekit's interpolation
};
// One `scale:` setting (a number, a gradient, or a list of {filter, value}); empty: not given.
using ScaleSetting = std::vector<ScaleRule>;

// The value of the first setting (from the highest precedence: source, slice, global) that has a
// rule matching tensor_name; within a setting the first matching rule wins. nullopt: no scale at
// all (mergekit then writes the tensor untouched, not multiplied by 1).
std::optional<double> scale_for(const std::vector<const ScaleSetting*>& settings,
                                const std::string& tensor_name, double t);

struct SliceSource {
  std::string model;           // model directory
  int64_t begin = 0, end = 0;  // layer_range [begin, end), end exclusive
  ScaleSetting scale;          // the source's `parameters: scale`
  ScaleSetting slice_scale;    // the slice's `parameters: scale` (below the source's)
};

struct Recipe {
  std::vector<SliceSource> slices;  // stacked in order
  ScaleSetting scale;               // the top-level `parameters: scale` (lowest precedence)
  std::optional<DType> dtype;      // mergekit `dtype`: the type tensors are read into and scaled in
  std::optional<DType> out_dtype;  // mergekit `out_dtype`: the type written (default: dtype)
  // Where config.json and the tokenizer come from: mergekit's `base_model`; empty: the first
  // slice's model.
  std::string base_model;
  // mergekit's `tokenizer_source` (or `tokenizer: source`): "" (copy the donor's files), "base",
  // "union" (kept where it adds no token to the base's), or a model directory.
  std::string tokenizer_source;
  std::string tokenizer_where;     // "FILE:LINE" of that key, for errors found with the models
  int64_t pad_to_multiple_of = 0;  // mergekit's `tokenizer: pad_to_multiple_of` (0: none)
  std::string chat_template;       // "" (keep the tokenizer's), "auto", or a template text
  bool fused_moe_output = false;   // Mixtral written in transformers v5's fused layout (mergekit)
  bool exact_zeros = false;        // scale 0 writes +0.0 (LLaMA-Pro), not x * 0 (mergekit's -0.0)
  std::string description;         // one line for the model card (e.g. "SOLAR DUS, n=32, m=8")

  int64_t num_layers() const;
  // The model config.json and the tokenizer are taken from.
  const std::string& donor() const { return base_model.empty() ? slices.at(0).model : base_model; }
  // The recipe as mergekit YAML (slices / sources / layer_range / parameters.scale ...).
  std::string to_yaml() const;
};

// Reads a mergekit YAML recipe. Only merge_method passthrough is supported; each slice takes one
// source; the `models:` form takes one model (all its layers). Relative model paths are resolved
// against the working directory, then the YAML's.
Recipe parse_mergekit_yaml(const std::string& path);
Recipe parse_mergekit_yaml_text(const std::string& text, const std::string& where,
                                const std::string& base_dir = "");
// The `models:` form needs each model's layer count: filled in by the caller (upscale) from
// config.json. A slice with end == kAllLayers takes [0, num_hidden_layers).
constexpr int64_t kAllLayers = -1;

// SOLAR's depth up-scaling: layers [0, n-m) then [m, n) of the same model (s = 2(n-m)).
Recipe solar_recipe(const std::string& model, int64_t n, int64_t m);

// LLaMA-Pro block expansion: after every k-th layer, a copy of it whose o_proj and down_proj
// (Mixtral: every expert's w2 / down_proj) are zero, so the new block is the identity.
Recipe expansion_recipe(const std::string& model, int64_t n, int64_t k);
// k for a target layer count N (N - n new layers spread evenly); throws when n is not divisible.
int64_t expansion_interval(int64_t n, int64_t target_layers);
// Indices (in the output) of the layers that expansion_recipe inserts.
std::vector<int64_t> expansion_new_layers(int64_t n, int64_t k);

}  // namespace lamina
