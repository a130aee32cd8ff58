// Cheap identities for caches and reports: FNV-1a over bytes, and a model directory's
// fingerprint from its weight and config files' names, sizes and modification times.
#pragma once
#include <cstdint>
#include <string>

namespace lamina {

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull);
inline uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  return fnv1a(s.data(), s.size(), h);
}
std::string model_fingerprint(const std::string& dir);  // hex
std::string hex64(uint64_t v);

}  // namespace lamina
