// UTF-8 text measured as Python measures str: in Unicode code points.
#pragma once
#include <cstdint>
#include <string>

namespace lamina {

// Code points in s (bytes that do not continue a sequence; malformed bytes count one each).
inline int64_t utf8_length(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace lamina
