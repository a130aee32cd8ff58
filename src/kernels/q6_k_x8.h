// Q6_K rows repacked for the integer products (Q6_Kx8, core/dtype.h): groups of 8 rows whose
// super-blocks (256 weights each) are interleaved by 4-byte chunks, as Q4_Kx8 (kernels/q4_k_x8.h)
// does for Q4_K, so that one vpdpbusd multiplies 4 weights of all 8 rows by 4 broadcast
// activations and the 8 row sums land in the 8 lanes. The 6-bit weights q (0..63; the weight is
// q - 32) are rearranged so that three of every four come out of a byte with one mask: scale
// group s (elements 16s .. 16s + 15) is three chunks X, Y, Z whose byte i of row r holds
//   X: q[16s + i]     in bits 0-5, bits 0-1 of q[16s + 12 + i] in bits 6-7
//   Y: q[16s + 4 + i] in bits 0-5, bits 2-3 of q[16s + 12 + i] in bits 6-7
//   Z: q[16s + 8 + i] in bits 0-5, bits 4-5 of q[16s + 12 + i] in bits 6-7
// (ggml's ql / qh split needed 8-9 vector operations per pair of chunks to join the 4 + 2 bits,
// this 9 per 4 chunks: Q6_Kx8 products at M = 1 ran 20% below Q4_Kx8's weight bytes per second
// from DRAM on 2 Zen 4 cores). One group's super-block b, 1680 bytes (the 8 rows' 8 x 210, the
// same bits rearranged):
//   [0, 16)        d of rows 0..7 (f16)
//   [16, 144)      the 16 int8 scales as four 32-byte words: scales[4w .. 4w + 3] of row r at
//                  16 + 32w + 4r
//   [144, 1680)    16 scale groups of 96 bytes: X, Y, Z of group s at 144 + 96s + {0, 32, 64},
//                  row r's 4 bytes at 4r
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
