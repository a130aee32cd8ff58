// libFuzzer target: parse_gguf on arbitrary bytes must either succeed with every tensor's data
// inside the buffer or throw lamina::Error; never crash, read out of bounds or hang. The same
// bytes go through parse_imatrix (llama.cpp's imatrix files: GGUF or the legacy format).
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/gguf_reader.h"
#include "io/imatrix_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto g = lamina::parse_gguf(data, size, "fuzz");
    for (auto& t : g.tensors)
      if (t.bytes && g.data_offset + t.offset + t.bytes > size)
        std::abort();  // validation missed it
  } catch (const lamina::Error&) {
  }
  try {
    lamina::parse_imatrix(data, size, "fuzz");
  } catch (const lamina::Error&) {
  }
  return 0;
}
