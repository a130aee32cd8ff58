// JSON and JSONL input: every reader goes through these, so errors name "file" or "file:line" and
// never echo a whole (possibly 50 MB) line back.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lamina {

// A whole JSON file; fails with "PATH: malformed JSON: ..." (or "PATH: cannot open ...").
nlohmann::json read_json_file(const std::string& path);
// nlohmann's message with any quoted input it echoes cut to ~80 characters.
std::string short_json_error(const std::exception& e);

// Calls fn(line, line_number) for every non-blank line of path; fails when it cannot be opened
// or is a directory. A JSON type error thrown by fn (a field of the wrong type) is reported as
// "PATH:LINE: ..." .
void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string&, int64_t)>& fn);
// Lines a lenient reader skipped (without --strict): the first few messages are kept and printed
// only once the file proved usable; when no line is usable, the error quotes the first of them
// (so a file refused as a whole is refused in one line that says why).
class SkippedLines {
 public:
  void add(const std::string& message);
  int64_t count() const { return count_; }
  void print_warnings() const;  // "lamina: skipping ..." for the first three, on stderr
  [[noreturn]] void fail_none_usable(const std::string& path, const char* what) const;

 private:
  int64_t count_ = 0;
  std::vector<std::string> first_;
};

// Parses one line; errors read "where: malformed JSON: ...".
nlohmann::json parse_json_line(const std::string& line, const std::string& where);
// The "text" field of a {"text": ...} line (plain-text corpora as JSONL).
std::string jsonl_text(const std::string& line, const std::string& where);

}  // namespace lamina
