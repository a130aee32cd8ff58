#include "io/jsonl.h"

#include <fstream>

#include "core/error.h"

namespace lamina {

void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string&, int64_t)>& fn) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open");
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    fn(line, n);
  }
}

nlohmann::json parse_json_line(const std::string& line, const std::string& where) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": malformed JSON: ", e.what());
  }
}

std::string jsonl_text(const std::string& line, const std::string& where) {
  nlohmann::json j = parse_json_line(line, where);
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
    fail(where, ": expected an object with a string field \"text\"");
  return j["text"].get<std::string>();
}

}  // namespace lamina
