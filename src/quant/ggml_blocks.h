// ggml's tensor types and block formats, as llama.cpp stores them in GGUF files. The quantizers are
// ggml's reference ones (quantize_row_*_ref semantics), so files written here are byte-identical
// to what llama.cpp's tools would write for the same F32 rows. This is the seam for quantized
// weights in lamina's own kernels later (Q4_0/Q8_0 blocks, then K-quants).
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
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30
};

// The GgmlType with this GGUF type id, when lamina knows it.
std::optional<GgmlType> ggml_type_from_id(uint32_t id);
// f32, f16, bf16, q8_0, q4_0 (case-insensitive); throws naming the accepted ones.
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
//   Q4_K (256 a block, read only): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for eight
//         sub-blocks of 32, 128 bytes of 4-bit q; x = d·sc_j·q - dmin·m_j
//   Q5_K (256 a block, read only): as Q4_K plus 32 bytes of fifth bits (qh) before the 4-bit q
//   Q6_K (256 a block, read only): 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales,
//         f16 d; x = d·sc_j·(q - 32) for sub-blocks of 16
// (llama.cpp's Q4_K_M / Q5_K_M files mix these with Q6_K.) Quantizing to them is not implemented.
// Rows of n F32 values (n a multiple of the block size) -> n / block blocks at out.
void quantize_row(GgmlType t, const float* x, int64_t n, uint8_t* out);
void dequantize_row(GgmlType t, const uint8_t* in, int64_t n, float* y);

}  // namespace lamina
