// Whole-string number parsing without exceptions: std::stod / std::stoll throw bare "stod" /
// "stoll" messages and accept trailing junk ("1.5abc"); these return nothing instead, and the
// caller names the file, line or option.
#pragma once
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

namespace lamina {

// A finite number filling the whole string ("nan", "inf", "", "1e999" and "2x" give nothing).
inline std::optional<double> parse_finite(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) return std::nullopt;
  return v;
}

// A base-10 integer filling the whole string, within int64.
inline std::optional<int64_t> parse_integer(const std::string& s) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end != s.c_str() + s.size() || errno == ERANGE) return std::nullopt;
  return int64_t(v);
}

}  // namespace lamina
