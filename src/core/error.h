// Errors: one exception type whose message is the one line the user sees.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lamina {

// Every user-facing failure throws Error; the CLI prints "lamina: <what()>" and exits 1.
// Messages name the file, line, tensor or field at fault.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  throw Error(s.str());
}

}  // namespace lamina

#define LAMINA_CHECK(cond, ...)               \
  do {                                        \
    if (!(cond)) ::lamina::fail(__VA_ARGS__); \
  } while (0)
