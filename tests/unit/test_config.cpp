#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "io/generation_config.h"
#include "io/mapped_file.h"
#include "io/model_config.h"
#include "test_util.h"

using namespace lamina;

namespace {
ModelConfig shared_config(const std::string& name) {
  std::string dir = test::assets_dir() + "/model-configs";
  if (!file_exists(dir + "/" + name)) ADD_FAILURE() << "missing test asset " << dir << "/" << name;
  return ModelConfig::from_json(nlohmann::json::parse(read_text_file(dir + "/" + name)), name);
}
}  // namespace

// Parameter counts of the real checkpoints (as their model cards and safetensors index report).
TEST(ModelConfig, RealShapesGiveRealParameterCounts) {
  auto mistral = shared_config("mistral-7b-v0.1.json");
  EXPECT_EQ(mistral.arch, Arch::Mistral);
  EXPECT_EQ(mistral.sliding_window.value_or(0), 4096);
  EXPECT_EQ(mistral.head_dim, 128);
  EXPECT_EQ(mistral.param_count(), 7241732096);
  auto solar = shared_config("solar-10.7b-v1.0.json");
  EXPECT_EQ(solar.arch, Arch::Llama);
  EXPECT_EQ(solar.num_hidden_layers, 48);
  EXPECT_EQ(solar.param_count(), 10731524096);
  auto mixtral = shared_config("mixtral-8x7b-instruct-v0.1.json");
  EXPECT_EQ(mixtral.num_local_experts, 8);
  EXPECT_EQ(mixtral.num_experts_per_tok, 2);
  EXPECT_DOUBLE_EQ(mixtral.router_aux_loss_coef, 0.02);
  EXPECT_FALSE(mixtral.sliding_window.has_value());
  EXPECT_EQ(mixtral.param_count(), 46702792704);
  EXPECT_EQ(mixtral.active_param_count(), 12879925248);
  auto openchat = shared_config("openchat-3.5-1210.json");
  EXPECT_EQ(openchat.vocab_size, 32002);
  EXPECT_EQ(openchat.eos_token_ids, std::vector<int64_t>{32000});
}

// init --shape's real shapes: parameter counts as transformers counts them (AutoModelForCausalLM
// from the same config on the meta device, transformers 5.23).
TEST(ModelConfig, PresetShapesGiveTransformersParameterCounts) {
  const std::pair<const char*, int64_t> want[] = {{"llama-3.2-1b", 1235814400},
                                                  {"llama-3.1-8b", 8030261248},
                                                  {"qwen2.5-7b", 7615616512},
                                                  {"qwen3-0.6b", 596049920},
                                                  {"qwen3-8b", 8190735360}};
  for (auto [name, n] : want) {
    const ModelConfig c = ModelConfig::from_json(preset_config(name), name);
    EXPECT_EQ(c.param_count(), n) << name;
  }
  EXPECT_EQ(ModelConfig::from_json(preset_config("llama-3.1-8b"), "x").rope_scaling.type, "llama3");
  EXPECT_TRUE(ModelConfig::from_json(preset_config("qwen2.5-7b"), "x").qkv_bias);
  EXPECT_TRUE(ModelConfig::from_json(preset_config("qwen3-8b"), "x").qk_norm);
}

TEST(ModelConfig, UnknownKeysSurviveARewrite) {
  nlohmann::json j = preset_config("tiny");
  j["model_type"] = "llama";
  j["my_custom_key"] = {{"nested", 1}};
  j["pretraining_tp"] = 1;
  auto c = ModelConfig::from_json(j, "x");
  c.num_hidden_layers = 7;
  auto out = c.to_json();
  EXPECT_EQ(out["my_custom_key"]["nested"], 1);
  EXPECT_EQ(out["pretraining_tp"], 1);
  EXPECT_EQ(out["num_hidden_layers"], 7);
  auto back = ModelConfig::from_json(out, "y");
  EXPECT_EQ(back.num_hidden_layers, 7);
  EXPECT_EQ(back.param_count(), c.param_count());
}

TEST(ModelConfig, RejectsBadFieldsNamingThem) {
  auto err = [](nlohmann::json j) {
    try {
      ModelConfig::from_json(j, "config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  nlohmann::json base = preset_config("tiny");
  auto j = base;
  j["model_type"] = "gpt2";
  EXPECT_NE(err(j).find("unsupported model_type 'gpt2'"), std::string::npos);
  j = base;
  j.erase("hidden_size");
  EXPECT_NE(err(j).find("missing field 'hidden_size'"), std::string::npos);
  j = base;
  j["num_key_value_heads"] = 3;
  EXPECT_NE(err(j).find("not a multiple of num_key_value_heads"), std::string::npos);
  j = base;
  j["vocab_size"] = "big";
  EXPECT_NE(err(j).find("'vocab_size' must be an integer"), std::string::npos);
  j = base;
  j["rope_scaling"] = {{"type", "linear"}};
  EXPECT_NE(err(j).find("rope_scaling"), std::string::npos);
  j = preset_config("tiny-mixtral");
  j["num_experts_per_tok"] = 5;
  EXPECT_NE(err(j).find("num_experts_per_tok"), std::string::npos);
}

TEST(ModelConfig, LlamaIgnoresSlidingWindowAndHeadDimDefaults) {
  nlohmann::json j = preset_config("tiny");
  j["sliding_window"] = 4;  // Llama has no sliding window in transformers
  auto c = ModelConfig::from_json(j, "x");
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.head_dim, 16);
  j["head_dim"] = 32;
  EXPECT_EQ(ModelConfig::from_json(j, "x").head_dim, 32);
}

// generation_config.json: eos_token_id as an int or a list, lamina's chat_condition, errors that
// name the file, and an absent file meaning "nothing extra".
TEST(GenerationConfig, ReadsEosListsAndConditionAndNamesErrors) {
  test::TempDir d;
  EXPECT_TRUE(read_generation_config(d.path).eos_token_ids.empty());
  auto put = [&](const std::string& s) { std::ofstream(d / "generation_config.json") << s; };
  put(R"({"eos_token_id": [2, 32000], "chat_condition": "GPT4"})");
  auto g = read_generation_config(d.path);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{2, 32000}));
  EXPECT_EQ(g.chat_condition.value_or(""), "GPT4");
  put(R"({"eos_token_id": 7})");
  g = read_generation_config(d.path);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{7}));
  EXPECT_FALSE(g.chat_condition);
  put(R"({"eos_token_id": ["x"]})");
  try {
    read_generation_config(d.path);
    ADD_FAILURE() << "a non-integer eos_token_id was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("generation_config.json: eos_token_id"), std::string::npos)
        << e.what();
  }
  put("{");
  EXPECT_THROW(read_generation_config(d.path), Error);
}
