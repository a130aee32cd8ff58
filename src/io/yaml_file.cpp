#include "io/yaml_file.h"

#include "core/error.h"
#include "io/mapped_file.h"

namespace lamina {

YAML::Node parse_yaml_text(const std::string& text, const std::string& where) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(where, ":", e.mark.line + 1, ": malformed YAML: ", e.msg);
  }
}

std::string yaml_where(const YAML::Node& n, const std::string& file) {
  const auto m = n.Mark();
  return m.line >= 0 ? file + ":" + std::to_string(m.line + 1) : file;
}

void yaml_conversion_failed(const YAML::Node& n, const std::string& file, const std::string& key,
                            const char* type) {
  std::string shown;
  if (n.IsScalar()) {
    shown = n.Scalar();
    if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
    shown = "'" + shown + "'";
  } else {
    shown = n.IsSequence() ? "a list" : n.IsMap() ? "a mapping" : "nothing";
  }
  fail(yaml_where(n, file), ": ", key, ": expected a ", type, ", got ", shown);
}

YAML::Node load_yaml_file(const std::string& path) {
  if (!file_exists(path)) fail(path, ": cannot open");
  return parse_yaml_text(read_text_file(path), path);
}

}  // namespace lamina
