#include "kernels/q6_k_x8.h"

#include <cstring>

#include "core/error.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 256;
constexpr size_t kBlockBytes = 210;  // one Q6_K super-block: ql[128], qh[64], scales[16], d
constexpr size_t kGroupBytes = kQ6Kx8GroupBlockBytes;
constexpr size_t kScalesAt = 16, kQuantsAt = 144;

// The 256 6-bit values of a Q6_K super-block in element order (ggml's dequantize_row_q6_K).
void decode_quants(const uint8_t* blk, uint8_t* q) {
  const uint8_t *ql = blk, *qh = blk + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t a = ql[64 * h + l], b = ql[64 * h + 32 + l], c = qh[32 * h + l];
      q[128 * h + l] = uint8_t((a & 0xF) | (c & 3) << 4);
      q[128 * h + l + 32] = uint8_t((b & 0xF) | (c >> 2 & 3) << 4);
      q[128 * h + l + 64] = uint8_t((a >> 4) | (c >> 4 & 3) << 4);
      q[128 * h + l + 96] = uint8_t((b >> 4) | (c >> 6 & 3) << 4);
    }
}

// decode_quants' inverse: ql and qh back from the 256 values.
void encode_quants(const uint8_t* q, uint8_t* blk) {
  uint8_t *ql = blk, *qh = blk + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* e = q + 128 * h + l;
      ql[64 * h + l] = uint8_t((e[0] & 0xF) | (e[64] & 0xF) << 4);
      ql[64 * h + 32 + l] = uint8_t((e[32] & 0xF) | (e[96] & 0xF) << 4);
      qh[32 * h + l] =
          uint8_t(e[0] >> 4 | (e[32] >> 4) << 2 | (e[64] >> 4) << 4 | (e[96] >> 4) << 6);
    }
}

// f(offset in the group's super-block, offset in row r's super-block, bytes) for the pieces that
// move unchanged: d and the scales.
template <class F>
void for_each_copied_piece(int r, F f) {
  f(2 * size_t(r), 208, 2);  // d
  for (size_t w = 0; w < 4; ++w) f(kScalesAt + 32 * w + 4 * size_t(r), 192 + 4 * w, 4);
}

// Where byte i of row r's chunk c (X, Y, Z) of scale group s sits in the group's super-block.
inline size_t quant_byte_at(int s, int c, int i, int r) {
  return kQuantsAt + 96 * size_t(s) + 32 * size_t(c) + 4 * size_t(r) + size_t(i);
}

}  // namespace

void repack_q6_k_x8(const uint8_t* rows, int64_t N, int64_t K, uint8_t* out) {
  LAMINA_CHECK(N % 8 == 0 && K % kQK == 0, "repack_q6_k_x8: [", N, ", ", K,
               "] is not whole groups of 8 rows of whole super-blocks");
  const int64_t nb = K / kQK;
  const size_t rb = size_t(nb) * kBlockBytes;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < N / 8; ++g)
    for (int64_t b = 0; b < nb; ++b)
      for (int r = 0; r < 8; ++r) {
        uint8_t* o = out + (size_t(g) * size_t(nb) + size_t(b)) * kGroupBytes;
        const uint8_t* blk = rows + (size_t(g) * 8 + size_t(r)) * rb + size_t(b) * kBlockBytes;
        for_each_copied_piece(
            r, [&](size_t go, size_t ro, size_t n) { std::memcpy(o + go, blk + ro, n); });
        uint8_t q[kQK];
        decode_quants(blk, q);
        for (int s = 0; s < 16; ++s)
          for (int c = 0; c < 3; ++c)
            for (int i = 0; i < 4; ++i) {
              const uint8_t d = q[16 * s + 12 + i];  // the fourth chunk's value, 2 bits per chunk
              o[quant_byte_at(s, c, i, r)] =
                  uint8_t(q[16 * s + 4 * c + i] | (d >> (2 * c) & 3) << 6);
            }
      }
}

void unpack_q6_k_x8_row(const uint8_t* group, int r, int64_t K, uint8_t* row) {
  const int64_t nb = K / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* o = group + size_t(b) * kGroupBytes;
    uint8_t* blk = row + size_t(b) * kBlockBytes;
    for_each_copied_piece(
        r, [&](size_t go, size_t ro, size_t n) { std::memcpy(blk + ro, o + go, n); });
    uint8_t q[kQK];
    for (int s = 0; s < 16; ++s)
      for (int i = 0; i < 4; ++i) {
        uint8_t d = 0;
        for (int c = 0; c < 3; ++c) {
          const uint8_t v = o[quant_byte_at(s, c, i, r)];
          q[16 * s + 4 * c + i] = v & 0x3F;
          d = uint8_t(d | (v >> 6) << (2 * c));
        }
        q[16 * s + 12 + i] = d;
      }
    encode_quants(q, blk);
  }
}

}  // namespace lamina
