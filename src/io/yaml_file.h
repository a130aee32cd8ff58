// YAML input for every reader (task definitions, mergekit recipes, --config, lamina recipes): one
// place that turns yaml-cpp's exceptions into "file:line: malformed YAML: ..." errors.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>

namespace lamina {

// Fails with "PATH: cannot open" or "PATH:LINE: malformed YAML: ...".
YAML::Node load_yaml_file(const std::string& path);
// The same for text read elsewhere; `where` names it in errors.
YAML::Node parse_yaml_text(const std::string& text, const std::string& where);

}  // namespace lamina
