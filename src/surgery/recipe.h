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

// mergekit's `parameters: scale`: the first rule whose filter is a substring of the tensor name
// applies; a rule without a filter is the default. No rule matching means 1.0.
struct ScaleRule {
  std::string filter;  // empty: matches every tensor
  double value = 1.0;
};
double scale_for(const std::vector<ScaleRule>& rules, const std::string& tensor_name);

struct SliceSource {
  std::string model;           // model directory
  int64_t begin = 0, end = 0;  // layer_range [begin, end), end exclusive
  std::vector<ScaleRule> scale;
};

struct Recipe {
  std::vector<SliceSource> slices;  // stacked in order
  std::optional<DType> dtype;       // output dtype; unset keeps each tensor's
  std::string description;          // one line for the model card (e.g. "SOLAR DUS, n=32, m=8")

  int64_t num_layers() const;
  // The recipe as mergekit YAML (slices / sources / layer_range / parameters.scale).
  std::string to_yaml() const;
};

// Reads a mergekit YAML recipe. Only merge_method passthrough is supported; each slice takes one
// source. Relative model paths are resolved against the working directory, then the YAML's.
Recipe parse_mergekit_yaml(const std::string& path);
Recipe parse_mergekit_yaml_text(const std::string& text, const std::string& where,
                                const std::string& base_dir = "");

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
