// Element types of stored tensors and the conversions between them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace lamina {

enum class DType : uint8_t { F32, F16, BF16 };

size_t dtype_size(DType t);
// Names as safetensors writes them: "F32", "F16", "BF16".
const char* dtype_name(DType t);
std::optional<DType> dtype_from_safetensors(const std::string& name);
// User spellings: f32/float32, f16/float16, bf16/bfloat16 (case-insensitive); throws on others.
DType parse_dtype(const std::string& name, const std::string& what);
// The torch_dtype string transformers writes in config.json.
const char* torch_dtype_name(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Bulk conversions, vectorised by the compiler; n elements.
void convert_to_f32(const void* src, DType src_type, float* dst, size_t n);
void convert_from_f32(const float* src, void* dst, DType dst_type, size_t n);

}  // namespace lamina
