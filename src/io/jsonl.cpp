#include "io/jsonl.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/mapped_file.h"

namespace lamina {

std::string short_json_error(const std::exception& e) {
  std::string m = e.what();
  // nlohmann writes "...; last read: '<everything it read>'": keep that quote short.
  const auto q = m.find(": '");
  if (q != std::string::npos) {
    const auto end = m.rfind('\'');
    if (end > q + 3 && end - (q + 3) > 80) m = m.substr(0, q + 3 + 77) + "...'" + m.substr(end + 1);
  }
  if (m.size() > 300) m = m.substr(0, 297) + "...";
  return m;
}

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": malformed JSON: ", short_json_error(e));
  }
}

void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string&, int64_t)>& fn) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, ": is a directory, expected a file");
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  int64_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      fn(line, n);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", n, ": ", short_json_error(e));
    }
  }
}

void SkippedLines::add(const std::string& message) {
  if (count_++ < 3) first_.push_back(message);
}

void SkippedLines::print_warnings() const {
  for (auto& m : first_) std::fprintf(stderr, "lamina: skipping %s\n", m.c_str());
}

void SkippedLines::fail_none_usable(const std::string& path, const char* what) const {
  fail(path, ": no usable ", what, " (", count_,
       " lines skipped; the first: ", first_.empty() ? std::string("none") : first_[0], ")");
}

nlohmann::json parse_json_line(const std::string& line, const std::string& where) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": malformed JSON: ", short_json_error(e));
  }
}

std::string jsonl_text(const std::string& line, const std::string& where) {
  nlohmann::json j = parse_json_line(line, where);
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
    fail(where, ": expected an object with a string field \"text\"");
  return j["text"].get<std::string>();
}

}  // namespace lamina
