#include "kernels/q6_k_x8.h"

#include <cstring>

#include "core/error.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 256;
constexpr size_t kBlockBytes = 210;  // one Q6_K super-block: ql[128], qh[64], scales[16], d
constexpr size_t kGroupBytes = kQ6Kx8GroupBlockBytes;

// f(offset in the group's super-block, offset in row r's super-block, bytes) for every piece of
// row r's super-block.
template <class F>
void for_each_piece(int r, F f) {
  const size_t at = 4 * size_t(r);
  f(2 * size_t(r), 208, 2);                                               // d
  for (size_t w = 0; w < 4; ++w) f(16 + 32 * w + at, 192 + 4 * w, 4);     // scales
  for (size_t c = 0; c < 32; ++c) f(144 + 32 * c + at, 4 * c, 4);         // ql
  for (size_t c = 0; c < 16; ++c) f(1168 + 32 * c + at, 128 + 4 * c, 4);  // qh
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
        for_each_piece(r,
                       [&](size_t go, size_t ro, size_t n) { std::memcpy(o + go, blk + ro, n); });
      }
}

void unpack_q6_k_x8_row(const uint8_t* group, int r, int64_t K, uint8_t* row) {
  const int64_t nb = K / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* o = group + size_t(b) * kGroupBytes;
    uint8_t* blk = row + size_t(b) * kBlockBytes;
    for_each_piece(r, [&](size_t go, size_t ro, size_t n) { std::memcpy(blk + ro, o + go, n); });
  }
}

}  // namespace lamina
