// Helpers shared by the unit tests: temporary directories and tiny random models.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "model/init_model.h"
#include "model/model.h"

namespace lamina::test {

// A fresh directory removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/lamina-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Writes config.json and random weights for a preset shape (with JSON overrides) into dir.
inline ModelConfig write_tiny_model(const std::string& dir, const std::string& shape,
                                    const nlohmann::json& overrides = {}, DType dtype = DType::F32,
                                    MoeLayout layout = MoeLayout::Split) {
  std::filesystem::create_directories(dir);
  nlohmann::json j = preset_config(shape);
  if (overrides.is_object())
    for (auto& [k, v] : overrides.items()) j[k] = v;
  ModelConfig c = ModelConfig::from_json(j, shape);
  c.save(dir + "/config.json");
  InitOptions opt;
  opt.dtype = dtype;
  opt.std = 0.15f;
  opt.random_norms = true;
  opt.layout = layout;
  opt.progress = false;
  write_random_weights(c, dir, opt);
  return c;
}

inline std::string assets_dir() {  // tests/assets: vendored real files
  return LAMINA_ASSETS_DIR;
}

// n samples of N(0, scale^2), seeded.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace lamina::test
