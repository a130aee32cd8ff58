// YAML input for every reader (task definitions, mergekit recipes, --config, lamina recipes): one
// place that turns yaml-cpp's exceptions into "file:line: malformed YAML: ..." errors.
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace lamina {

// Fails with "PATH: cannot open" or "PATH:LINE: malformed YAML: ...".
YAML::Node load_yaml_file(const std::string& path);
// The same for text read elsewhere; `where` names it in errors.
YAML::Node parse_yaml_text(const std::string& text, const std::string& where);

// "FILE:LINE" of a node (yaml-cpp counts lines from 0), for messages about a value.
std::string yaml_where(const YAML::Node& n, const std::string& file);

[[noreturn]] void yaml_conversion_failed(const YAML::Node& n, const std::string& file,
                                         const std::string& key, const char* type);

// n.as<T>() that fails with "FILE:LINE: KEY: expected a TYPE, got 'VALUE'" instead of yaml-cpp's
// bare "bad conversion" (which names neither the file nor the key).
template <class T>
T yaml_as(const YAML::Node& n, const std::string& file, const std::string& key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    const char* type = std::is_same_v<T, bool>                       ? "boolean (true/false)"
                       : std::is_integral_v<T>                       ? "integer"
                       : std::is_floating_point_v<T>                 ? "number"
                       : std::is_same_v<T, std::vector<std::string>> ? "list of strings"
                                                                     : "string";
    yaml_conversion_failed(n, file, key, type);
  }
}
}  // namespace lamina
