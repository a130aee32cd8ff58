// Element types of stored tensors and the conversions between them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace lamina {

enum class GgmlType : uint32_t;  // quant/ggml_blocks.h

// F32/F16/BF16: stored tensors. Q8_0/Q4_0: ggml's 32-element blocks (src/quant/ggml_blocks.h),
// weights quantized at load for inference; Q5_0/Q5_1 (32) and Q2_K..Q6_K (256-element k-quant
// blocks, src/quant/k_quants.h): read from GGUF files. Rows must hold whole blocks.
// NF4: QLoRA's 4-bit NormalFloat with double-quantised absmax (src/quant/nf4.h), a frozen training
// base only; its absmax statistics span the whole tensor, so it converts as a whole tensor (n =
// numel), never row by row.
// Q4_0x8 / Q8_0x8: Q4_0 / Q8_0 rows repacked for the products only (kernels/quant_dot.h): groups
// of 8 rows, each block of the group the quant bytes interleaved by 4-byte chunks then the 8 f16
// scales — the same bytes per 32 weights; an inference model's matrices only (no ggml type, no
// conversions). Q4_Kx8 / Q6_Kx8: Q4_K / Q6_K rows repacked the same way (kernels/q4_k_x8.h,
// kernels/q6_k_x8.h), 144 / 210 bytes per 256.
enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,
  Q4_0,
  Q4_K,
  Q5_K,
  Q6_K,
  NF4,
  Q4_0x8,
  Q8_0x8,
  Q5_0,
  Q5_1,
  Q2_K,
  Q3_K,
  Q4_Kx8,
  Q6_Kx8
};

// The same element types as ggml names them (GGUF), both ways.
GgmlType ggml_type_of(DType t);
DType dtype_from_ggml(GgmlType t);
// Bytes per element of F32/F16/BF16 (fails for the block types: use dtype_bytes).
size_t dtype_size(DType t);
// Bytes of n consecutive elements (n a multiple of the block size for block types).
size_t dtype_bytes(DType t, int64_t n);
int64_t dtype_block(DType t);  // elements per block: 32 for Q8_0/Q4_0, else 1
bool dtype_is_quantized(DType t);
// Names as safetensors writes them: "F32", "F16", "BF16".
const char* dtype_name(DType t);
std::optional<DType> dtype_from_safetensors(const std::string& name);
// User spellings: f32/float32, f16/float16, bf16/bfloat16 (case-insensitive); throws on others.
// With quantized, also q8_0 and q4_0 (inference weights).
DType parse_dtype(const std::string& name, const std::string& what, bool quantized = false);
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

// Bulk conversions, vectorised by the compiler; n elements (whole blocks for Q8_0/Q4_0).
void convert_to_f32(const void* src, DType src_type, float* dst, size_t n);
void convert_from_f32(const float* src, void* dst, DType dst_type, size_t n);

}  // namespace lamina
