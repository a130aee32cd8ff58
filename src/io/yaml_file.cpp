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

YAML::Node load_yaml_file(const std::string& path) {
  if (!file_exists(path)) fail(path, ": cannot open");
  return parse_yaml_text(read_text_file(path), path);
}

}  // namespace lamina
