// libFuzzer target: parse_safetensors on arbitrary bytes must either succeed with offsets inside
// the buffer or throw lamina::Error; never crash, read out of bounds or hang.
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto h = lamina::parse_safetensors(data, size, "fuzz");
    for (auto& t : h.tensors)
      if (t.end > size - h.data_start || t.begin > t.end) std::abort();  // validation missed it
  } catch (const lamina::Error&) {
  }
  return 0;
}
