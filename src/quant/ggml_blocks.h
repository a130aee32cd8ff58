// ggml's tensor types and block formats, as llama.cpp stores them in GGUF files. The quantizers are
// ggml's own (quantize_row_*_ref without an importance matrix, quantize_row_*_impl with one, as
// ggml_quantize_chunk chooses), so files written here are byte-identical to what llama.cpp's tools
// write for the same F32 rows (tests/oracles/test_llamacpp.py). The k-quants are in k_quants.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace lamina {

// ggml_type ids (the numbers stored in GGUF tensor infos).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30
};

// The GgmlType with this GGUF type id, when lamina knows it.
std::optional<GgmlType> ggml_type_from_id(uint32_t id);
// A type's name as ggml_type_name gives it (case-insensitive); throws naming the accepted ones.
GgmlType parse_ggml_type(const std::string& name);
const char* ggml_type_name(GgmlType t);
// Elements per block (1 for the float types) and bytes per block.
int64_t ggml_block_elems(GgmlType t);
size_t ggml_block_bytes(GgmlType t);
// Bytes of one row of n elements; n must be a multiple of the block size.
size_t ggml_row_bytes(GgmlType t, int64_t n);

// Block layouts (little-endian, packed):
//   Q8_0: f16 d, int8 q[32];          x = d * q,         d = max|x| / 127, q = round(x / d)
//   Q4_0: f16 d, uint8 qs[16];        x = d * (q - 8),   d = (x of max |x|) / -8,
//         qs[j] = q[j] | q[j + 16] << 4,                 q = min(15, trunc(x / d + 8.5))
//   Q5_0: f16 d, uint32 qh (fifth bits), uint8 qs[16];  x = d * (q - 16), d = (x of max |x|) / -16
//   Q5_1: f16 d, f16 m, uint32 qh, uint8 qs[16];       x = d * q + m, d = (max - min) / 31, m = min
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256 a block, see k_quants.h
// (llama.cpp's Q4_K_M and the other mixes combine these per tensor: quant/quant_mix.h.)
// One row of n F32 values (n a multiple of the block size) -> n / block blocks at out. With
// `importance` (n values: the row's tensor's importance matrix, llama.cpp's imatrix), the types
// that use one (all quantized ones but Q8_0) choose their scales weighted by it.
void quantize_row(GgmlType t, const float* x, int64_t n, uint8_t* out,
                  const float* importance = nullptr);
void dequantize_row(GgmlType t, const uint8_t* in, int64_t n, float* y);

}  // namespace lamina
