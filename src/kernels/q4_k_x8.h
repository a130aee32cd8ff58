// Q4_K rows repacked for the integer products (Q4_Kx8, core/dtype.h): groups of 8 rows whose
// super-blocks (256 weights each) are interleaved so that one vpmaddubsw multiplies 4 weights of
// all 8 rows by 4 broadcast activations and the 8 row sums land in the 8 lanes — the treatment
// Q4_0 gets as Q4_0x8 (kernels/quant_dot.h), here with Q4_K's 6-bit sub-block scales and mins.
// One group's super-block b, 1152 bytes (the 8 rows' 8 x 144, the same bytes rearranged):
//   [0, 16)      d of rows 0..7 (f16)
//   [16, 32)     dmin of rows 0..7 (f16)
//   [32, 128)    the 12 scale bytes as three 32-byte words: bytes 4w..4w+3 of row r at
//                32 + 32w + 4r (w = 0, 1, 2), so ggml's get_scale_min_k4 runs on all 8 rows at once
//   [128, 1152)  32 chunks of 32 bytes: chunk 8j + k holds qs[32j + 4k .. 32j + 4k + 3] of row r at
//                4r — low nibbles are elements 64j + 4k.. (sub-block 2j), high ones 64j + 32 + 4k..
//                (sub-block 2j + 1)
// The products are llama.cpp's for Q4_K against Q8_K activations (kernels/kquant_dot.h): exact
// int32 sums per super-block, F32 accumulation of d_w d_x sumi - dmin_w d_x summ.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kquant_dot.h"

namespace lamina {

constexpr size_t kQ4Kx8GroupBlockBytes = 8 * 144;

// Q4_K rows [N, K] (N a multiple of 8, K of 256) -> Q4_Kx8 at out (the same number of bytes).
void repack_q4_k_x8(const uint8_t* rows, int64_t N, int64_t K, uint8_t* out);
// Row r (0..7) of the group of 8 rows at group, back to a plain Q4_K row of K / 256 blocks.
void unpack_q4_k_x8_row(const uint8_t* group, int r, int64_t K, uint8_t* row);

// y[m, n] (+)= the product for activation rows [m0, m1) and weight rows [n0, n1) (multiples of 8)
// of a Q4_Kx8 tensor at w; AVX2 only (kquant_dot_rows runs the scalar reference on unpacked rows).
void q4_k_x8_dot_rows_avx2(const Q8KActivations& x, int64_t m0, int64_t m1, const uint8_t* w,
                           int64_t n0, int64_t n1, float* y, int64_t ldy, bool accumulate);

}  // namespace lamina
