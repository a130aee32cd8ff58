// JSONL input: every reader goes line by line, skips blank lines and names "file:line" in errors.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace lamina {

// Calls fn(line, line_number) for every non-blank line of path; fails when it cannot be opened.
void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string&, int64_t)>& fn);
// Parses one line; errors read "where: malformed JSON: ...".
nlohmann::json parse_json_line(const std::string& line, const std::string& where);
// The "text" field of a {"text": ...} line (plain-text corpora as JSONL).
std::string jsonl_text(const std::string& line, const std::string& where);

}  // namespace lamina
