#include <gtest/gtest.h>

#include "core/error.h"
#include "surgery/recipe.h"

using namespace lamina;

namespace {
// One setting's scale for a tensor at t = 0; 1.0 where no rule matches.
double sc(const ScaleSetting& s, const std::string& name, double t = 0) {
  return scale_for({&s}, name, t).value_or(1.0);
}
}  // namespace

TEST(Recipe, ParsesMergekitPassthroughWithScales) {
  Recipe r = parse_mergekit_yaml_text(R"(
slices:
  - sources:
      - model: a
        layer_range: [0, 24]
  - sources:
      - model: b
        layer_range: [8, 32]
        parameters:
          scale:
            - filter: o_proj
              value: 0.0
            - filter: down_proj
              value: 0.5
            - value: 1.0
merge_method: passthrough
dtype: bfloat16
)",
                                      "r.yaml");
  ASSERT_EQ(r.slices.size(), 2u);
  EXPECT_EQ(r.slices[0].model, "a");
  EXPECT_EQ(r.slices[1].begin, 8);
  EXPECT_EQ(r.slices[1].end, 32);
  EXPECT_EQ(r.num_layers(), 48);
  EXPECT_EQ(r.dtype, DType::BF16);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.3.self_attn.o_proj.weight"), 0.0);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.3.mlp.down_proj.weight"), 0.5);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.3.mlp.up_proj.weight"), 1.0);
  EXPECT_EQ(sc(r.slices[0].scale, "anything"), 1.0);
  // The YAML written back parses to the same recipe.
  Recipe back = parse_mergekit_yaml_text(r.to_yaml(), "back.yaml");
  ASSERT_EQ(back.slices.size(), 2u);
  EXPECT_EQ(back.slices[1].scale.size(), 3u);
  EXPECT_EQ(back.slices[1].scale[1].filter, "down_proj");
  EXPECT_EQ(back.dtype, DType::BF16);
}

TEST(Recipe, SolarIsTwoSlicesOfOneModel) {
  Recipe r = solar_recipe("mistral", 32, 8);
  ASSERT_EQ(r.slices.size(), 2u);
  EXPECT_EQ(r.slices[0].begin, 0);
  EXPECT_EQ(r.slices[0].end, 24);
  EXPECT_EQ(r.slices[1].begin, 8);
  EXPECT_EQ(r.slices[1].end, 32);
  EXPECT_EQ(r.num_layers(), 48);
  EXPECT_THROW(solar_recipe("m", 32, 32), Error);
  EXPECT_THROW(solar_recipe("m", 32, 0), Error);
}

TEST(Recipe, LlamaProExpansion) {
  Recipe r = expansion_recipe("m", 6, 3);
  EXPECT_EQ(r.num_layers(), 8);
  // [0,3) [2,3)* [3,6) [5,6)*  (* = identity copy)
  ASSERT_EQ(r.slices.size(), 4u);
  EXPECT_EQ(r.slices[1].begin, 2);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.2.self_attn.o_proj.weight"), 0.0);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.2.block_sparse_moe.experts.3.w2.weight"), 0.0);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.2.mlp.experts.down_proj"), 0.0);
  EXPECT_EQ(sc(r.slices[1].scale, "model.layers.2.block_sparse_moe.experts.3.w1.weight"), 1.0);
  EXPECT_EQ(expansion_new_layers(6, 3), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(expansion_interval(32, 40), 4);  // LLaMA-Pro: 32 -> 40 layers, one per 4
  EXPECT_THROW(expansion_interval(6, 10), Error);
  EXPECT_THROW(expansion_interval(6, 6), Error);
}

TEST(Recipe, RejectsWhatPassthroughCannotDo) {
  auto err = [](const std::string& yaml) {
    try {
      parse_mergekit_yaml_text(yaml, "r.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err("models:\n  - model: a\nmerge_method: linear\n")
                .find("merge_method 'linear' is not supported"),
            std::string::npos);
  EXPECT_NE(err("slices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n      - "
                "model: b\n        layer_range: [0, 2]\n"
                "merge_method: passthrough\n")
                .find("exactly one source"),
            std::string::npos);
  EXPECT_NE(err("slices:\n  - sources:\n      - model: a\n        layer_range: [5, "
                "2]\nmerge_method: passthrough\n")
                .find("empty"),
            std::string::npos);
  EXPECT_NE(err("slices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n        "
                "parameters:\n          weight: 1\n"
                "merge_method: passthrough\n")
                .find("'weight' is not supported"),
            std::string::npos);
  EXPECT_NE(err("slices: []\nmerge_method: passthrough\n").find("non-empty"), std::string::npos);
  EXPECT_NE(err("- a\n").find("expected a mergekit recipe"), std::string::npos);
}

TEST(Recipe, OutDtypeIsTheWrittenTypeAndUnknownKeysAreRefused) {
  // mergekit: dtype is the compute type, out_dtype the written one.
  Recipe r = parse_mergekit_yaml_text(R"(
slices:
  - sources:
      - model: a
        layer_range: [0, 2]
merge_method: passthrough
dtype: float32
out_dtype: bfloat16
)",
                                      "r.yaml");
  EXPECT_EQ(r.dtype, DType::F32);
  EXPECT_EQ(r.out_dtype, DType::BF16);
  try {
    parse_mergekit_yaml_text(R"(
slices:
  - sources:
      - model: a
        layer_range: [0, 2]
merge_method: passthrough
chat_template: chatml
)",
                             "c.yaml");
    FAIL() << "a built-in chat_template name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.yaml:7: chat_template 'chatml': mergekit's built-in"),
              std::string::npos)
        << e.what();
  }
}

TEST(Recipe, ScaleSettingsAsMergekitEvaluatesThem) {
  // mergekit 0.1.5 evaluate_setting: "*" matches everything, gradients interpolate linearly at
  // t (n - 1), the first setting with a matching rule wins (source, slice, global).
  Recipe r = parse_mergekit_yaml_text(R"(
slices:
  - sources:
      - model: a
        layer_range: [0, 5]
        parameters:
          scale:
            - filter: o_proj
              value: [1, 0.5, 0.25]
    parameters:
      scale: [0, 1]
  - sources:
      - model: a
        layer_range: [0, 2]
parameters:
  scale:
    - filter: "*"
      value: 0.3
merge_method: passthrough
)",
                                      "g.yaml");
  auto at = [&](size_t slice, const std::string& name, double t) {
    const auto& s = r.slices[slice];
    return scale_for({&s.scale, &s.slice_scale, &r.scale}, name, t);
  };
  EXPECT_DOUBLE_EQ(*at(0, "x.o_proj.weight", 0.75), 0.375);  // between 0.5 and 0.25
  EXPECT_DOUBLE_EQ(*at(0, "x.o_proj.weight", 1.0), 0.25);
  EXPECT_DOUBLE_EQ(*at(0, "x.up_proj.weight", 0.25), 0.25);  // the slice's gradient
  EXPECT_DOUBLE_EQ(*at(1, "anything", 0.0), 0.3);            // "*" at the top level
  EXPECT_FALSE(scale_for({&r.slices[1].scale}, "anything", 0).has_value());
  Recipe m = parse_mergekit_yaml_text(
      "models:\n  - model: a\n    parameters:\n      scale: 2\nmerge_method: passthrough\n",
      "m.yaml");
  ASSERT_EQ(m.slices.size(), 1u);
  EXPECT_EQ(m.slices[0].end, kAllLayers);
  EXPECT_THROW(parse_mergekit_yaml_text(
                   "models:\n  - model: a\n  - model: b\nmerge_method: passthrough\n", "m.yaml"),
               Error);
}
