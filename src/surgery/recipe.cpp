#include "surgery/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/yaml_file.h"

namespace lamina {

double scale_for(const std::vector<ScaleRule>& rules, const std::string& name) {
  for (auto& r : rules)
    if (r.filter.empty() || name.find(r.filter) != std::string::npos) return r.value;
  return 1.0;
}

int64_t Recipe::num_layers() const {
  int64_t n = 0;
  for (auto& s : slices) n += s.end - s.begin;
  return n;
}

std::string Recipe::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "slices" << YAML::Value << YAML::BeginSeq;
  for (auto& s : slices) {
    e << YAML::BeginMap << YAML::Key << "sources" << YAML::Value << YAML::BeginSeq
      << YAML::BeginMap;
    e << YAML::Key << "model" << YAML::Value << s.model;
    e << YAML::Key << "layer_range" << YAML::Value << YAML::Flow << YAML::BeginSeq << s.begin
      << s.end << YAML::EndSeq;
    if (!s.scale.empty()) {
      e << YAML::Key << "parameters" << YAML::Value << YAML::BeginMap << YAML::Key << "scale"
        << YAML::Value << YAML::BeginSeq;
      for (auto& r : s.scale) {
        e << YAML::Flow << YAML::BeginMap;
        if (!r.filter.empty()) e << YAML::Key << "filter" << YAML::Value << r.filter;
        e << YAML::Key << "value" << YAML::Value << r.value << YAML::EndMap;
      }
      e << YAML::EndSeq << YAML::EndMap;
    }
    e << YAML::EndMap << YAML::EndSeq << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::Key << "merge_method" << YAML::Value << "passthrough";
  if (dtype) e << YAML::Key << "dtype" << YAML::Value << torch_dtype_name(*dtype);
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

namespace {

std::vector<ScaleRule> parse_scale(const YAML::Node& params, const std::string& where) {
  std::vector<ScaleRule> rules;
  if (!params) return rules;
  if (!params.IsMap()) fail(where, ": 'parameters' must be a mapping");
  for (auto it : params) {
    auto key = it.first.as<std::string>();
    if (key != "scale")
      fail(where, ": parameter '", key, "' is not supported by passthrough (only 'scale')");
    const YAML::Node& v = it.second;
    if (v.IsScalar()) {
      rules.push_back({"", yaml_as<double>(v, where, "scale")});
    } else if (v.IsSequence()) {
      for (const auto& r : v) {
        if (!r.IsMap() || !r["value"]) fail(where, ": each 'scale' entry needs a 'value'");
        rules.push_back({r["filter"] ? yaml_as<std::string>(r["filter"], where, "filter") : "",
                         yaml_as<double>(r["value"], where, "scale value")});
      }
    } else {
      fail(where, ": 'scale' must be a number or a list of {filter, value}");
    }
  }
  return rules;
}

std::string resolve_model(const std::string& model, const std::string& base_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;  // the non-throwing overloads: a path part over NAME_MAX is just absent
  if (fs::exists(model, ec) || base_dir.empty() || fs::path(model).is_absolute()) return model;
  fs::path alt = fs::path(base_dir) / model;
  return fs::exists(alt, ec) ? alt.string() : model;
}

}  // namespace

Recipe parse_mergekit_yaml_text(const std::string& text, const std::string& where,
                                const std::string& base_dir) {
  YAML::Node root = parse_yaml_text(text, where);
  if (!root.IsMap())
    fail(where, ": expected a mergekit recipe (a mapping with 'slices' and 'merge_method')");
  Recipe r;
  try {
    std::string method = root["merge_method"]
                             ? yaml_as<std::string>(root["merge_method"], where, "merge_method")
                             : "";
    if (method != "passthrough")
      fail(where, ": merge_method '", method,
           "' is not supported (lamina implements passthrough: layer stacking)");
    if (root["dtype"])
      r.dtype = parse_dtype(yaml_as<std::string>(root["dtype"], where, "dtype"), where + ": dtype");
    // mergekit computes in `dtype` and writes `out_dtype` when given; passthrough only copies (and
    // scales in F32, then rounds once), so the written dtype is what matters.
    if (root["out_dtype"])
      r.dtype = parse_dtype(yaml_as<std::string>(root["out_dtype"], where, "out_dtype"),
                            where + ": out_dtype");
    std::vector<ScaleRule> global = parse_scale(root["parameters"], where);
    for (auto it : root) {
      auto k = it.first.as<std::string>();
      if (k != "slices" && k != "merge_method" && k != "dtype" && k != "out_dtype" &&
          k != "parameters" && k != "base_model" && k != "name" && k != "tokenizer_source")
        fail(yaml_where(it.first, where), ": key '", k,
             "' is not supported by lamina's passthrough (slices, merge_method, dtype, out_dtype, "
             "parameters, base_model, name, tokenizer_source); refusing rather than ignoring it");
    }
    if (root["tokenizer_source"] && root["tokenizer_source"].as<std::string>() != "base")
      fail(where, ": tokenizer_source '", root["tokenizer_source"].as<std::string>(),
           "' is not supported (the first slice's tokenizer is used)");
    const YAML::Node& slices = root["slices"];
    if (!slices || !slices.IsSequence() || slices.size() == 0)
      fail(where, ": 'slices' must be a non-empty list");
    for (size_t i = 0; i < slices.size(); ++i) {
      const std::string at = where + ": slices[" + std::to_string(i) + "]";
      const YAML::Node& srcs = slices[i]["sources"];
      if (!srcs || !srcs.IsSequence() || srcs.size() != 1)
        fail(at, ": passthrough takes exactly one source per slice");
      const YAML::Node& s = srcs[0];
      if (!s["model"]) fail(at, ": source has no 'model'");
      const YAML::Node& lr = s["layer_range"];
      if (!lr || !lr.IsSequence() || lr.size() != 2)
        fail(at, ": 'layer_range' must be [begin, end]");
      SliceSource src;
      src.model = resolve_model(yaml_as<std::string>(s["model"], at, "model"), base_dir);
      if (std::error_code ec;
          src.model.find('+') != std::string::npos && !std::filesystem::exists(src.model, ec))
        fail(at, ": model '", src.model, "' (LoRA '+' syntax is not supported)");
      src.begin = yaml_as<int64_t>(lr[0], at, "layer_range");
      src.end = yaml_as<int64_t>(lr[1], at, "layer_range");
      if (src.begin < 0 || src.end <= src.begin)
        fail(at, ": layer_range [", src.begin, ", ", src.end,
             "] is empty or negative (the end is exclusive)");
      src.scale = parse_scale(s["parameters"], at);
      auto slice_params = parse_scale(slices[i]["parameters"], at);
      src.scale.insert(src.scale.end(), slice_params.begin(), slice_params.end());
      src.scale.insert(src.scale.end(), global.begin(), global.end());
      r.slices.push_back(src);
    }
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ": ", e.msg);
  }
  r.description = "mergekit passthrough recipe " + where;
  return r;
}

Recipe parse_mergekit_yaml(const std::string& path) {
  if (!file_exists(path)) fail(path, ": recipe not found");
  return parse_mergekit_yaml_text(read_text_file(path), path,
                                  std::filesystem::path(path).parent_path().string());
}

Recipe solar_recipe(const std::string& model, int64_t n, int64_t m) {
  if (m <= 0 || m >= n)
    fail("--drop ", m, ": must be in [1, ", n - 1, "] for a ", n, "-layer model");
  Recipe r;
  r.slices = {{model, 0, n - m, {}}, {model, m, n, {}}};
  r.description = "SOLAR depth up-scaling: n = " + std::to_string(n) +
                  ", m = " + std::to_string(m) + ", layers [0, " + std::to_string(n - m) +
                  ") then [" + std::to_string(m) + ", " + std::to_string(n) +
                  "), s = " + std::to_string(2 * (n - m));
  return r;
}

std::vector<int64_t> expansion_new_layers(int64_t n, int64_t k) {
  std::vector<int64_t> out;
  int64_t pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    ++pos;
    if ((i + 1) % k == 0) out.push_back(pos++);
  }
  return out;
}

Recipe expansion_recipe(const std::string& model, int64_t n, int64_t k) {
  if (k <= 0 || k > n) fail("--expand-every ", k, ": must be in [1, ", n, "]");
  // The identity block: attention and MLP outputs projected to zero (Mixtral: every expert's w2).
  const std::vector<ScaleRule> zero = {{"o_proj", 0.0}, {"down_proj", 0.0}, {".w2.", 0.0}};
  Recipe r;
  int64_t start = 0;
  for (int64_t i = 0; i < n; ++i) {
    if ((i + 1) % k == 0) {
      r.slices.push_back({model, start, i + 1, {}});
      r.slices.push_back({model, i, i + 1, zero});
      start = i + 1;
    }
  }
  if (start < n) r.slices.push_back({model, start, n, {}});
  r.description = "LLaMA-Pro block expansion: an identity copy after every " + std::to_string(k) +
                  " of " + std::to_string(n) + " layers";
  return r;
}

int64_t expansion_interval(int64_t n, int64_t target) {
  if (target <= n) fail("--target-layers ", target, ": must exceed the model's ", n, " layers");
  int64_t added = target - n;
  if (n % added)
    fail("--target-layers ", target, ": ", n, " layers cannot be split evenly into ", added,
         " groups");
  return n / added;
}

}  // namespace lamina
