#include "kernels/q4_k_x8.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include "kernels/avx2_util.h"
#include "kernels/stream_prefetch.h"
#endif

#include "core/error.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 256;
constexpr size_t kBlockBytes = 144;  // one Q4_K super-block: d, dmin, 12 scale bytes, 128 qs
constexpr size_t kGroupBytes = kQ4Kx8GroupBlockBytes;
constexpr size_t kQsOffset = 128;

}  // namespace

void repack_q4_k_x8(const uint8_t* rows, int64_t N, int64_t K, uint8_t* out) {
  LAMINA_CHECK(N % 8 == 0 && K % kQK == 0, "repack_q4_k_x8: [", N, ", ", K,
               "] is not whole groups of 8 rows of whole super-blocks");
  const int64_t nb = K / kQK;
  const size_t rb = size_t(nb) * kBlockBytes;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < N / 8; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* o = out + (size_t(g) * size_t(nb) + size_t(b)) * kGroupBytes;
      for (int r = 0; r < 8; ++r) {
        const uint8_t* blk = rows + (size_t(g) * 8 + size_t(r)) * rb + size_t(b) * kBlockBytes;
        std::memcpy(o + 2 * r, blk, 2);
        std::memcpy(o + 16 + 2 * r, blk + 2, 2);
        for (int w = 0; w < 3; ++w) std::memcpy(o + 32 + 32 * w + 4 * r, blk + 4 + 4 * w, 4);
        for (int c = 0; c < 32; ++c)
          std::memcpy(o + kQsOffset + 32 * c + 4 * r, blk + 16 + 4 * c, 4);
      }
    }
}

void unpack_q4_k_x8_row(const uint8_t* group, int r, int64_t K, uint8_t* row) {
  const int64_t nb = K / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* o = group + size_t(b) * kGroupBytes;
    uint8_t* blk = row + size_t(b) * kBlockBytes;
    std::memcpy(blk, o + 2 * r, 2);
    std::memcpy(blk + 2, o + 16 + 2 * r, 2);
    for (int w = 0; w < 3; ++w) std::memcpy(blk + 4 + 4 * w, o + 32 + 32 * w + 4 * r, 4);
    for (int c = 0; c < 32; ++c) std::memcpy(blk + 16 + 4 * c, o + kQsOffset + 32 * c + 4 * r, 4);
  }
}

#if defined(__x86_64__)

namespace {

// pshufb control: in every 32-bit lane, its byte a as a 16-bit value in the low half and byte b
// in the high half (the rows' lanes stay where they are).
LAMINA_AVX2 inline __m256i lane_bytes_to_u16_pair(int a, int b) {
  auto lane = [&](int i) { return int((4 * i + a) | 0x80 << 8 | (4 * i + b) << 16 | 0x80 << 24); };
  return _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(0), lane(1), lane(2), lane(3));
}

// 8 weight rows (lanes) x RX activation rows over nb super-blocks. Per sub-block of 32 weights:
// 8 chunks of 4 weights, each vpmaddubsw'd with 4 broadcast activations into int16 pair sums
// (at most 8 · 2 · 15 · 127 = 30480), then one vpmaddwd with the rows' 6-bit scales adds them
// to the int32 sum of the super-block. The mins: vpmaddwd of the rows' min pairs with the
// activations' sub-block sums (s32, 32 elements each).
template <int RX>
LAMINA_AVX2 void q4kx8_tile(const uint8_t* g, const int8_t* const* xq, const float* const* xd,
                            const int16_t* const* s32, int64_t nb, float* out /* [RX][8] */) {
  __m256 acc[RX];
  for (int c = 0; c < RX; ++c) acc[c] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0f), m6 = _mm256_set1_epi8(0x3f);
  const __m256i m3 = _mm256_set1_epi8(0x03);
  for (int64_t b = 0; b < nb; ++b, g += kGroupBytes) {
    if (RX == 1)  // decoding streams the rows; a prompt's tiles re-read them from the cache
      prefetch_stream(g, kGroupBytes);  // kernels/stream_prefetch.h
    // get_scale_min_k4 on the 8 rows' words: scales 0..3 / 4..7 and mins 0..3 / 4..7, one byte
    // per sub-block in each row's lane.
    const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32));
    const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 64));
    const __m256i u2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 96));
    const __m256i sc[2] = {
        _mm256_and_si256(u0, m6),
        _mm256_or_si256(_mm256_and_si256(u2, m4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), m3), 4))};
    const __m256i mn[2] = {
        _mm256_and_si256(u1, m6),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), m4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), m3), 4))};
    __m256i sumi[RX];
    for (int c = 0; c < RX; ++c) sumi[c] = _mm256_setzero_si256();
    const uint8_t* qs = g + kQsOffset;
    for (int j = 0; j < 4; ++j) {
      // Sub-blocks 2j (low nibbles) and 2j + 1 (high) together, one load per chunk. The 2 x RX
      // int16 sums as named variables, not arrays: GCC keeps arrays of them in memory here (a
      // store and a load per product), named ones stay in registers.
      __m256i l0 = _mm256_setzero_si256(), l1 = l0, l2 = l0, l3 = l0;
      __m256i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
      const int64_t off = b * kQK + 64 * j;
      auto chunk = [&](int k) LAMINA_AVX2_INLINE {
        const __m256i ch =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (8 * j + k)));
        const __m256i lo = _mm256_and_si256(ch, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(ch, 4), m4);
        auto step = [&](__m256i& acc_lo, __m256i& acc_hi, const int8_t* x) LAMINA_AVX2_INLINE {
          int32_t a, c;
          std::memcpy(&a, x + off + 4 * k, 4);
          std::memcpy(&c, x + off + 32 + 4 * k, 4);
          acc_lo = _mm256_add_epi16(acc_lo, _mm256_maddubs_epi16(lo, _mm256_set1_epi32(a)));
          pin(acc_lo);
          acc_hi = _mm256_add_epi16(acc_hi, _mm256_maddubs_epi16(hi, _mm256_set1_epi32(c)));
          pin(acc_hi);
        };
        step(l0, h0, xq[0]);
        if constexpr (RX > 1) step(l1, h1, xq[1]);
        if constexpr (RX > 2) step(l2, h2, xq[2]);
        if constexpr (RX > 3) step(l3, h3, xq[3]);
      };
      chunk(0), chunk(1), chunk(2), chunk(3), chunk(4), chunk(5), chunk(6), chunk(7);
      const __m256i sc_lo =
          _mm256_shuffle_epi8(sc[j / 2], lane_bytes_to_u16_pair(2 * (j % 2), 2 * (j % 2)));
      const __m256i sc_hi =
          _mm256_shuffle_epi8(sc[j / 2], lane_bytes_to_u16_pair(2 * (j % 2) + 1, 2 * (j % 2) + 1));
      const __m256i lsum[4] = {l0, l1, l2, l3}, hsum[4] = {h0, h1, h2, h3};
      for (int c = 0; c < RX; ++c)
        sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(_mm256_madd_epi16(lsum[c], sc_lo),
                                                             _mm256_madd_epi16(hsum[c], sc_hi)));
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16)));
    __m256i mins[4];  // min pairs (2p, 2p + 1) of each row as int16
    for (int p = 0; p < 4; ++p)
      mins[p] =
          _mm256_shuffle_epi8(mn[p / 2], lane_bytes_to_u16_pair(2 * (p % 2), 2 * (p % 2) + 1));
    for (int c = 0; c < RX; ++c) {
      __m256i summ = _mm256_setzero_si256();
      for (int p = 0; p < 4; ++p) {
        int32_t pair;
        std::memcpy(&pair, s32[c] + 8 * b + 2 * p, 4);
        summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mins[p], _mm256_set1_epi32(pair)));
      }
      const __m256 dx = _mm256_set1_ps(xd[c][b]);
      acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
      acc[c] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(summ), acc[c]);
    }
  }
  for (int c = 0; c < RX; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

}  // namespace

void q4_k_x8_dot_rows_avx2(const Q8KActivations& x, int64_t m0, int64_t m1, const uint8_t* w,
                           int64_t n0, int64_t n1, float* y, int64_t ldy, bool accumulate) {
  const int64_t K = x.K, nb = K / kQK, ns = K / 32;
  // The activations' sums per sub-block of 32 (the mins multiply them), for these rows.
  thread_local std::vector<int16_t> s32_buf;
  s32_buf.resize(size_t((m1 - m0) * ns));
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t s = 0; s < ns; ++s)
      s32_buf[size_t((m - m0) * ns + s)] =
          int16_t(x.bsum[size_t(m * (K / 16) + 2 * s)] + x.bsum[size_t(m * (K / 16) + 2 * s + 1)]);
  float out[4 * 8];
  for (int64_t n = n0; n < n1; n += 8) {
    const uint8_t* g = w + size_t(n / 8) * size_t(nb) * kGroupBytes;
    for (int64_t m = m0; m < m1; m += 4) {
      const int rx = int(std::min<int64_t>(4, m1 - m));
      const int8_t* xq[4];
      const float* xd[4];
      const int16_t* s32[4];
      for (int c = 0; c < rx; ++c)
        xq[c] = x.q.data() + (m + c) * K, xd[c] = x.d.data() + (m + c) * nb,
        s32[c] = s32_buf.data() + (m + c - m0) * ns;
      switch (rx) {
        case 4:
          q4kx8_tile<4>(g, xq, xd, s32, nb, out);
          break;
        case 3:
          q4kx8_tile<3>(g, xq, xd, s32, nb, out);
          break;
        case 2:
          q4kx8_tile<2>(g, xq, xd, s32, nb, out);
          break;
        default:
          q4kx8_tile<1>(g, xq, xd, s32, nb, out);
      }
      for (int c = 0; c < rx; ++c)
        for (int r = 0; r < 8; ++r) {
          float& o = y[(m + c) * ldy + n + r];
          o = accumulate ? o + out[c * 8 + r] : out[c * 8 + r];
        }
    }
  }
}

#else

void q4_k_x8_dot_rows_avx2(const Q8KActivations&, int64_t, int64_t, const uint8_t*, int64_t,
                           int64_t, float*, int64_t, bool) {
  fail("q4_k_x8_dot_rows_avx2: not an x86-64 build");
}

#endif

}  // namespace lamina
