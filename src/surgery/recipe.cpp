#include "surgery/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/yaml_file.h"

namespace lamina {

double ScaleRule::at(double t) const {
  // mergekit 0.1.5 evaluate_setting, in double as Python does: i0 = int(t (n - 1)), linear
  // between points i0 and i0 + 1.
  if (points.size() == 1) return points[0];
  const double scaled = t * double(points.size() - 1);
  const size_t i0 = size_t(scaled), i1 = std::min(points.size() - 1, i0 + 1);
  const double frac = scaled - double(i0);
  return (1 - frac) * points[i0] + frac * points[i1];
}

std::optional<double> scale_for(const std::vector<const ScaleSetting*>& settings,
                                const std::string& name, double t) {
  for (const ScaleSetting* s : settings)
    for (const auto& r : *s)
      if (r.filter.empty() || r.filter == "*" || name.find(r.filter) != std::string::npos)
        return r.at(t);
  return std::nullopt;
}

int64_t Recipe::num_layers() const {
  int64_t n = 0;
  for (auto& s : slices) n += s.end - s.begin;
  return n;
}

namespace {

void emit_scale(YAML::Emitter& e, const ScaleSetting& s) {
  e << YAML::Key << "parameters" << YAML::Value << YAML::BeginMap << YAML::Key << "scale"
    << YAML::Value << YAML::BeginSeq;
  for (auto& r : s) {
    e << YAML::Flow << YAML::BeginMap;
    if (!r.filter.empty()) e << YAML::Key << "filter" << YAML::Value << r.filter;
    e << YAML::Key << "value" << YAML::Value;
    if (r.points.size() == 1) {
      e << r.points[0];
    } else {
      e << YAML::Flow << YAML::BeginSeq;
      for (double p : r.points) e << p;
      e << YAML::EndSeq;
    }
    e << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::EndMap;
}

}  // namespace

std::string Recipe::to_yaml() const {
  YAML::Emitter e;
  e << YAML::BeginMap;
  if (!base_model.empty()) e << YAML::Key << "base_model" << YAML::Value << base_model;
  e << YAML::Key << "slices" << YAML::Value << YAML::BeginSeq;
  for (auto& s : slices) {
    e << YAML::BeginMap << YAML::Key << "sources" << YAML::Value << YAML::BeginSeq
      << YAML::BeginMap;
    e << YAML::Key << "model" << YAML::Value << s.model;
    e << YAML::Key << "layer_range" << YAML::Value << YAML::Flow << YAML::BeginSeq << s.begin
      << s.end << YAML::EndSeq;
    if (!s.scale.empty()) emit_scale(e, s.scale);
    e << YAML::EndMap << YAML::EndSeq;
    if (!s.slice_scale.empty()) emit_scale(e, s.slice_scale);
    e << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::Key << "merge_method" << YAML::Value << "passthrough";
  if (!scale.empty()) emit_scale(e, scale);
  if (dtype) e << YAML::Key << "dtype" << YAML::Value << torch_dtype_name(*dtype);
  if (out_dtype) e << YAML::Key << "out_dtype" << YAML::Value << torch_dtype_name(*out_dtype);
  if (!tokenizer_source.empty())
    e << YAML::Key << "tokenizer_source" << YAML::Value << tokenizer_source;
  if (!chat_template.empty()) e << YAML::Key << "chat_template" << YAML::Value << chat_template;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

namespace {

// A `value:`: a number, or a gradient (a non-empty list of numbers).
std::vector<double> parse_points(const YAML::Node& v, const std::string& where) {
  if (v.IsSequence()) {
    if (v.size() == 0) fail(yaml_where(v, where), ": scale: a gradient needs at least one value");
    std::vector<double> pts;
    for (const auto& p : v) pts.push_back(yaml_as<double>(p, where, "scale gradient value"));
    return pts;
  }
  return {yaml_as<double>(v, where, "scale value")};
}

ScaleRule parse_rule(const YAML::Node& r, const std::string& where) {
  if (!r["value"])
    fail(yaml_where(r, where), ": scale: each {filter, value} entry needs a 'value'");
  for (auto it : r) {
    auto k = it.first.as<std::string>();
    if (k != "filter" && k != "value")
      fail(yaml_where(it.first, where), ": scale: key '", k, "' (only 'filter' and 'value')");
  }
  return {r["filter"] ? yaml_as<std::string>(r["filter"], where, "filter") : "",
          parse_points(r["value"], where)};
}

// mergekit's ParameterSetting for `scale`: a number, a gradient [a, b, ...], one {filter, value},
// or a list of {filter, value} whose values may be gradients.
ScaleSetting parse_scale(const YAML::Node& params, const std::string& where) {
  ScaleSetting rules;
  if (!params) return rules;
  if (!params.IsMap()) fail(yaml_where(params, where), ": 'parameters' must be a mapping");
  for (auto it : params) {
    auto key = it.first.as<std::string>();
    if (key != "scale")
      fail(yaml_where(it.first, where), ": parameter '", key,
           "' is not supported by passthrough (only 'scale')");
    const YAML::Node& v = it.second;
    if (v.IsScalar()) {
      rules.push_back({"", parse_points(v, where)});
    } else if (v.IsMap()) {
      rules.push_back(parse_rule(v, where));
    } else if (v.IsSequence() && v.size() > 0 && v[0].IsMap()) {
      for (const auto& r : v) {
        if (!r.IsMap())
          fail(yaml_where(r, where), ": scale: a list mixes {filter, value} entries and numbers");
        rules.push_back(parse_rule(r, where));
      }
    } else if (v.IsSequence()) {
      if (v.size() > 0) rules.push_back({"", parse_points(v, where)});  // a gradient
    } else if (!v.IsNull()) {
      fail(yaml_where(v, where),
           ": 'scale' must be a number, a gradient [a, b, ...] or a list of {filter, value}");
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

std::string parse_model(const YAML::Node& m, const std::string& where,
                        const std::string& base_dir) {
  std::string model = resolve_model(yaml_as<std::string>(m, where, "model"), base_dir);
  if (std::error_code ec;
      model.find('+') != std::string::npos && !std::filesystem::exists(model, ec))
    fail(yaml_where(m, where), ": model '", model, "' (LoRA '+' syntax is not supported)");
  return model;
}

void only_keys(const YAML::Node& n, const std::set<std::string>& keys, const std::string& what,
               const std::string& where) {
  for (auto it : n) {
    auto k = it.first.as<std::string>();
    if (!keys.count(k)) {
      std::string list;
      for (auto& x : keys) list += (list.empty() ? "" : ", ") + x;
      fail(yaml_where(it.first, where), ": ", what, " key '", k,
           "' is not supported by lamina's passthrough (", list,
           "); refusing rather than ignoring it");
    }
  }
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
    only_keys(root,
              {"slices", "models", "merge_method", "dtype", "out_dtype", "parameters", "base_model",
               "name", "tokenizer_source", "tokenizer", "chat_template"},
              "recipe", where);
    // mergekit reads every tensor into `dtype`, scales it there, then casts to `out_dtype`.
    // mergekit dtype_from_name: "bfloat16", "float16", "float32", optionally "torch."-prefixed.
    auto dtype_of = [&](const char* key) {
      std::string name = yaml_as<std::string>(root[key], where, key);
      if (name.rfind("torch.", 0) == 0) name = name.substr(6);
      return parse_dtype(name, yaml_where(root[key], where) + ": " + key);
    };
    if (root["dtype"]) r.dtype = dtype_of("dtype");
    if (root["out_dtype"]) r.out_dtype = dtype_of("out_dtype");
    r.scale = parse_scale(root["parameters"], where);
    if (root["base_model"]) r.base_model = parse_model(root["base_model"], where, base_dir);
    // The tokenizer: `tokenizer_source`, or the `tokenizer:` section's `source` (default union).
    if (root["tokenizer_source"] && root["tokenizer"])
      fail(yaml_where(root["tokenizer"], where),
           ": give tokenizer_source or tokenizer, not both (as mergekit)");
    // reset(), not operator=: yaml-cpp's assignment writes through to the node referred to.
    YAML::Node src_node;
    if (root["tokenizer_source"]) src_node.reset(root["tokenizer_source"]);
    if (const YAML::Node& tok = root["tokenizer"]; tok && !tok.IsNull()) {
      if (!tok.IsMap()) fail(yaml_where(tok, where), ": 'tokenizer' must be a mapping");
      only_keys(tok, {"source", "pad_to_multiple_of"}, "tokenizer", where);
      if (tok["source"]) src_node.reset(tok["source"]);
      r.tokenizer_source = "union";
      if (tok["pad_to_multiple_of"])
        r.pad_to_multiple_of =
            yaml_as<int64_t>(tok["pad_to_multiple_of"], where, "tokenizer.pad_to_multiple_of");
    }
    if (src_node.IsDefined() && !src_node.IsNull())
      r.tokenizer_where = yaml_where(src_node, where);
    else if (root["tokenizer"])
      r.tokenizer_where = yaml_where(root["tokenizer"], where);
    if (src_node.IsDefined() && !src_node.IsNull()) {
      r.tokenizer_source = yaml_as<std::string>(src_node, where, "tokenizer_source");
      if (r.tokenizer_source != "base" && r.tokenizer_source != "union")
        r.tokenizer_source = parse_model(src_node, where, base_dir);
    }
    if (const YAML::Node& ct = root["chat_template"]) {
      r.chat_template = yaml_as<std::string>(ct, where, "chat_template");
      // mergekit's _set_chat_template: "auto", a built-in name, else a template text (at least
      // 20 characters with a '{').
      const std::string& c = r.chat_template;
      if (c != "auto" && (c.size() < 20 || c.find('{') == std::string::npos)) {
        if (c.size() < 256 && c.find('\n') == std::string::npos)
          fail(yaml_where(ct, where), ": chat_template '", c,
               "': mergekit's built-in templates (alpaca, chatml, exaone, llama3, mistral) are "
               "not bundled with lamina; give 'auto' or the template text");
        fail(yaml_where(ct, where), ": chat_template '", c,
             "' is not a template (mergekit: 'Invalid chat template')");
      }
    }
    const bool has_slices = bool(root["slices"]), has_models = bool(root["models"]);
    if (has_slices == has_models)
      fail(where, ": give exactly one of 'slices' and 'models' (lamina does not take 'modules')");
    if (has_models) {
      // mergekit normalize_config: the models form is one slice whose sources are every model's
      // whole layer range (plus base_model when it is not among them); passthrough takes one.
      const YAML::Node& models = root["models"];
      if (!models.IsSequence() || models.size() == 0)
        fail(yaml_where(models, where), ": 'models' must be a non-empty list");
      const YAML::Node& m = models[0];
      if (!m.IsMap() || !m["model"]) fail(yaml_where(m, where), ": models[0] has no 'model'");
      only_keys(m, {"model", "parameters"}, "models[0]", where);
      SliceSource src;
      src.model = parse_model(m["model"], where, base_dir);
      if (models.size() != 1 || (!r.base_model.empty() && r.base_model != src.model))
        fail(yaml_where(models, where),
             ": passthrough takes one model (with base_model, that model); ", models.size(),
             " model(s) given", r.base_model.empty() ? "" : " and base_model " + r.base_model);
      src.begin = 0;
      src.end = kAllLayers;
      src.scale = parse_scale(m["parameters"], where);
      r.slices.push_back(src);
    } else {
      const YAML::Node& slices = root["slices"];
      if (!slices.IsSequence() || slices.size() == 0)
        fail(yaml_where(slices, where), ": 'slices' must be a non-empty list");
      for (size_t i = 0; i < slices.size(); ++i) {
        const YAML::Node& sl = slices[i];
        const std::string at = "slices[" + std::to_string(i) + "]";
        if (!sl.IsMap()) fail(yaml_where(sl, where), ": ", at, " must be a mapping");
        only_keys(sl, {"sources", "parameters"}, at, where);
        const YAML::Node& srcs = sl["sources"];
        if (!srcs || !srcs.IsSequence() || srcs.size() != 1)
          fail(srcs ? yaml_where(srcs, where) : yaml_where(sl, where), ": ", at,
               ": passthrough takes exactly one source per slice");
        const YAML::Node& s = srcs[0];
        if (!s.IsMap() || !s["model"])
          fail(yaml_where(s, where), ": ", at, ": source has no 'model'");
        only_keys(s, {"model", "layer_range", "parameters"}, at + " source", where);
        const YAML::Node& lr = s["layer_range"];
        if (!lr || !lr.IsSequence() || lr.size() != 2)
          fail(lr ? yaml_where(lr, where) : yaml_where(s, where), ": ", at,
               ": 'layer_range' must be [begin, end]");
        SliceSource src;
        src.model = parse_model(s["model"], where, base_dir);
        src.begin = yaml_as<int64_t>(lr[0], where, "layer_range");
        src.end = yaml_as<int64_t>(lr[1], where, "layer_range");
        if (src.begin < 0 || src.end <= src.begin)
          fail(yaml_where(lr, where), ": ", at, ": layer_range [", src.begin, ", ", src.end,
               "] is empty or negative (the end is exclusive)");
        src.scale = parse_scale(s["parameters"], where);
        src.slice_scale = parse_scale(sl["parameters"], where);
        r.slices.push_back(src);
      }
    }
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ": ", e.msg);
  }
  r.fused_moe_output = true;  // mergekit 0.1.5 reads and writes transformers v5's layout
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
  r.slices = {{model, 0, n - m, {}, {}}, {model, m, n, {}, {}}};
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
  const ScaleSetting zero = {{"o_proj", {0.0}}, {"down_proj", {0.0}}, {".w2.", {0.0}}};
  Recipe r;
  int64_t start = 0;
  for (int64_t i = 0; i < n; ++i) {
    if ((i + 1) % k == 0) {
      r.slices.push_back({model, start, i + 1, {}, {}});
      r.slices.push_back({model, i, i + 1, zero, {}});
      start = i + 1;
    }
  }
  if (start < n) r.slices.push_back({model, start, n, {}, {}});
  r.exact_zeros = true;
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
