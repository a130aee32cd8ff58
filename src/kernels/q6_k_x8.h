// Q6_K rows repacked for the integer products (Q6_Kx8, core/dtype.h): groups of 8 rows whose
// super-blocks (256 weights each) are interleaved by 4-byte chunks, as Q4_Kx8 (kernels/q4_k_x8.h)
// does for Q4_K, so that one vpdpbusd multiplies 4 weights of all 8 rows by 4 broadcast
// activations and the 8 row sums land in the 8 lanes. One group's super-block b, 1680 bytes (the
// 8 rows' 8 x 210, the same bytes rearranged):
//   [0, 16)        d of rows 0..7 (f16)
//   [16, 144)      the 16 int8 scales as four 32-byte words: scales[4w .. 4w + 3] of row r at
//                  16 + 32w + 4r
//   [144, 1168)    ql: 32 chunks, chunk c holds ql[4c .. 4c + 3] of row r at 4r
//   [1168, 1680)   qh: 16 chunks, chunk c holds qh[4c .. 4c + 3] of row r at 4r
// ggml's element order within a super-block (dequantize_row_q6_K): for half h (128 weights) and
// l in 0..31, ql[64h + l] and ql[64h + 32 + l] hold the low 4 bits of elements 128h + l (low
// nibble), + 32 (low), + 64 (high nibble), + 96 (high); qh[32h + l] their high 2 bits (bits 0-1,
// 2-3, 4-5, 6-7); element e has scale e / 16. The products are llama.cpp's for Q6_K against Q8_K
// activations (kernels/kquant_dot.h): sum_g sc_g sum_{j in g} (q_j - 32) x_j exact in int32.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lamina {

constexpr size_t kQ6Kx8GroupBlockBytes = 8 * 210;

// Q6_K rows [N, K] (N a multiple of 8, K of 256) -> Q6_Kx8 at out (the same number of bytes).
void repack_q6_k_x8(const uint8_t* rows, int64_t N, int64_t K, uint8_t* out);
// Row r (0..7) of the group of 8 rows at group, back to a plain Q6_K row of K / 256 blocks.
void unpack_q6_k_x8_row(const uint8_t* group, int r, int64_t K, uint8_t* row);

}  // namespace lamina
