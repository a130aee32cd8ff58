#include "io/fingerprint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace lamina {
namespace fs = std::filesystem;

uint64_t fnv1a(const void* p, size_t n, uint64_t h) {
  auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

std::string model_fingerprint(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_regular_file(dir)) {  // a single-file model (GGUF): its size and time
    uint64_t h = fnv1a(fs::absolute(dir).string());
    const auto size = fs::file_size(dir, ec);
    const auto mtime = fs::last_write_time(dir, ec).time_since_epoch().count();
    h = fnv1a(&size, sizeof size, h);
    return hex64(fnv1a(&mtime, sizeof mtime, h));
  }
  for (auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  uint64_t h = fnv1a(fs::absolute(dir).string());
  for (auto& f : files) {
    if (f.find("safetensors") == std::string::npos && f.find("config.json") == std::string::npos)
      continue;
    h = fnv1a(f, h);
    const auto size = fs::file_size(f, ec);
    const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
    h = fnv1a(&size, sizeof size, h);
    h = fnv1a(&mtime, sizeof mtime, h);
  }
  return hex64(h);
}

}  // namespace lamina
