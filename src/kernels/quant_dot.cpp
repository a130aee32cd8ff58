#include "kernels/quant_dot.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__)
#include "kernels/avx2_util.h"
#include "kernels/stream_prefetch.h"
#endif

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/int8_tiles_vnni.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 32;

constexpr size_t block_bytes(DType q) {
  return q == DType::Q8_0 ? 34 : 18;
}

float block_scale(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return f16_to_f32(h);
}

// Scalar reference: ggml's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0 (an exact int32 sum per block,
// then sumi · d_w · d_x accumulated in F32).
template <DType Q>
float dot_scalar(const uint8_t* w, const int8_t* xq, const float* xd, int64_t nb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += block_bytes(Q), xq += kQK) {
    int32_t sumi = 0;
    if constexpr (Q == DType::Q8_0) {
      const auto* q = reinterpret_cast<const int8_t*>(w + 2);
      for (int j = 0; j < kQK; ++j) sumi += int32_t(q[j]) * xq[j];
    } else {
      for (int j = 0; j < kQK / 2; ++j) {
        sumi += (int32_t(w[2 + j] & 15) - 8) * xq[j];
        sumi += (int32_t(w[2 + j] >> 4) - 8) * xq[j + kQK / 2];
      }
    }
    sum += float(sumi) * (block_scale(w) * xd[b]);
  }
  return sum;
}

template <DType Q>
void rows_scalar(const Q8Activations& x, int64_t m0, int64_t m1, const uint8_t* w, size_t rb,
                 int64_t n0, int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t K = x.K, nb = K / kQK;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = m0; m < m1; ++m) {
      const float v =
          dot_scalar<Q>(w + size_t(n) * rb, x.q.data() + m * K, x.d.data() + m * nb, nb);
      float& o = y[m * ldy + n];
      o = acc ? o + v : v;
    }
}

// Many activation rows against Q4_0: 8 weight rows interleaved per block into the 8 lanes of a
// register (chunk k holds bytes 4k..4k+3 of each row's 16 nibble bytes: elements 4k..4k+3 in the
// low nibbles, 16+4k..16+4k+3 in the high ones), packed once per call for a group of 8 rows, so
// one vpmaddubsw multiplies 4 elements of all 8 rows by 4 broadcast activations and the 8 row sums
// end in the 8 lanes: no horizontal sums, one scale product per block and activation row (as
// llama.cpp's repacked Q4_0 8x8 layout does). An inference Model holds its Q4_0 matrices in this
// layout (Q4_0x8: one contiguous stream per thread, which decoding needs to reach the memory's
// speed); other Q4_0 weights are packed on the fly per group, or read in place for few rows.
// The unsigned nibbles q (0..15) are multiplied as they are and 8 · sum(x) subtracted per block:
// the int16 sums of 8 products of pairs stay within 8 · 2 · 15 · 127 = 30480.
constexpr size_t kQ4x8Bytes = 4 * 32 + 8 * 2;  // 4 interleaved nibble chunks, 8 f16 scales
// Activation rows from which a group of 8 weight rows is packed once (reused by every activation
// row) rather than transposed in registers block by block.
constexpr int64_t kPackMinRows = 8;
// In-place reads: each row's data 2.3 KB ahead (of 16, 48 and 128 blocks, the best on a
// 4096 x 14336 decode product; still half the speed of the contiguous Q4_0x8 stream).
constexpr int64_t kPrefetchBlocks = 128;

// 8 rows of nb blocks (f16 scale, then kChunks x 4 quant bytes) -> per block the kChunks
// interleaved 32-byte chunks (lane r = row r), then the 8 scales.
template <int kChunks>
void pack_x8(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out) {
  constexpr size_t blk_bytes = 2 + 4 * kChunks, group_bytes = 32 * kChunks + 16;
  for (int64_t b = 0; b < nb; ++b, out += group_bytes)
    for (int r = 0; r < 8; ++r) {
      const uint8_t* blk = w + size_t(r) * rb + size_t(b) * blk_bytes;
      for (int k = 0; k < kChunks; ++k) std::memcpy(out + k * 32 + r * 4, blk + 2 + 4 * k, 4);
      std::memcpy(out + 32 * kChunks + r * 2, blk, 2);
    }
}
void pack_q4x8(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out) {
  pack_x8<4>(w, rb, nb, out);
}

// Q4_0x8 (8 rows interleaved, as packed above): row r of the group whose blocks start at g.
float dot_scalar_q4x8(const uint8_t* g, int r, const int8_t* xq, const float* xd, int64_t nb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, g += kQ4x8Bytes, xq += kQK) {
    int32_t sumi = 0;
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 4; ++j) {
        const uint8_t byte = g[k * 32 + r * 4 + j];
        sumi += (int32_t(byte & 15) - 8) * xq[4 * k + j];
        sumi += (int32_t(byte >> 4) - 8) * xq[16 + 4 * k + j];
      }
    sum += float(sumi) * (block_scale(g + 128 + 2 * r) * xd[b]);
  }
  return sum;
}

// Q8_0x8: the same interleave for Q8_0 — 8 chunks of 4 bytes per row and block, then the 8 f16
// scales. The signed weights keep the sign trick (|w| · sign(x, w)), whose int16 pair sums (up to
// 2 · 128 · 127) leave no room to add chunks before widening to int32.
constexpr size_t kQ8x8Bytes = 8 * 32 + 8 * 2;

void pack_q8x8(const uint8_t* w, size_t rb, int64_t nb, uint8_t* out) {
  pack_x8<8>(w, rb, nb, out);
}

float dot_scalar_q8x8(const uint8_t* g, int r, const int8_t* xq, const float* xd, int64_t nb) {
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, g += kQ8x8Bytes, xq += kQK) {
    int32_t sumi = 0;
    for (int k = 0; k < 8; ++k)
      for (int j = 0; j < 4; ++j) sumi += int32_t(int8_t(g[k * 32 + r * 4 + j])) * xq[4 * k + j];
    sum += float(sumi) * (block_scale(g + 256 + 2 * r) * xd[b]);
  }
  return sum;
}

// Rows of a Q4_0x8 / Q8_0x8 tensor, scalar.
template <DType Q>
void rows_scalar_x8(const Q8Activations& x, int64_t m0, int64_t m1, const uint8_t* w, int64_t n0,
                    int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t K = x.K, nb = K / kQK;
  const size_t gb = Q == DType::Q8_0x8 ? kQ8x8Bytes : kQ4x8Bytes;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = m0; m < m1; ++m) {
      const uint8_t* g = w + size_t(n / 8) * size_t(nb) * gb;
      const float v =
          Q == DType::Q8_0x8
              ? dot_scalar_q8x8(g, int(n % 8), x.q.data() + m * K, x.d.data() + m * nb, nb)
              : dot_scalar_q4x8(g, int(n % 8), x.q.data() + m * K, x.d.data() + m * nb, nb);
      float& o = y[m * ldy + n];
      o = acc ? o + v : v;
    }
}

#if defined(__x86_64__)

// RW weight rows x RX activation rows over all blocks: each weight block is unpacked to 32 signed
// bytes once and multiplied with RX activation blocks (|w| · sign(x, w) keeps vpmaddubsw's
// unsigned-by-signed form exact: |w| <= 128, |x| <= 127, pair sums within int16).
template <DType Q, int RW, int RX>
LAMINA_AVX2 void tile_avx2(const uint8_t* const* wr, const int8_t* const* xq,
                           const float* const* xd, int64_t nb, float* out /* [RW][RX] */) {
  __m256 acc[RW][RX];
  for (int r = 0; r < RW; ++r)
    for (int c = 0; c < RX; ++c) acc[r][c] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < RW; ++r) {
      const uint8_t* blk = wr[r] + size_t(b) * block_bytes(Q);
      __m256i wv;
      if constexpr (Q == DType::Q8_0) {
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      } else {  // low nibbles are elements 0..15, high nibbles 16..31
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
        wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), lo4);
        wv = _mm256_sub_epi8(wv, eight);
      }
      uint16_t h;
      std::memcpy(&h, blk, 2);
      const float dw = _cvtsh_ss(h);
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      for (int c = 0; c < RX; ++c) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[c] + b * kQK));
        const __m256i p =
            _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones);
        acc[r][c] =
            _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[c][b]), _mm256_cvtepi32_ps(p), acc[r][c]);
      }
    }
  }
  for (int r = 0; r < RW; ++r)
    for (int c = 0; c < RX; ++c) out[r * RX + c] = hsum_avx2(acc[r][c]);
}

template <DType Q, int RW>
void tile_rows_avx2(const Q8Activations& x, int64_t m, int rx, const uint8_t* const* wr, int64_t nb,
                    float* out) {
  const int8_t* xq[4];
  const float* xd[4];
  for (int c = 0; c < rx; ++c)
    xq[c] = x.q.data() + (m + c) * x.K, xd[c] = x.d.data() + (m + c) * nb;
  switch (rx) {
    case 4:
      return tile_avx2<Q, RW, 4>(wr, xq, xd, nb, out);
    case 3:
      return tile_avx2<Q, RW, 3>(wr, xq, xd, nb, out);
    case 2:
      return tile_avx2<Q, RW, 2>(wr, xq, xd, nb, out);
    default:
      return tile_avx2<Q, RW, 1>(wr, xq, xd, nb, out);
  }
}

// The 8 rows' block b in lanes: from the packed buffer, or (kDirect) straight from the rows as
// stored — a 4 x 4 transpose of 32-bit words per 128-bit half (rows 0-3 low, 4-7 high) and the
// 8 f16 scales gathered — for decoding, where packing would cost more than the product.
template <bool kDirect>
LAMINA_AVX2 inline void q4x8_block(const uint8_t* src, size_t rb, int64_t b, __m256i* chunk,
                                   __m256& dw) {
  if constexpr (kDirect) {
    const uint8_t* blk = src + size_t(b) * 18;
    // Eight row streams at once are more than the hardware prefetcher follows: fetch each row's
    // line kPrefetchBlocks ahead, every 3 blocks (54 bytes: every 64-byte line).
    if (b % 3 == 0)
      for (int r = 0; r < 8; ++r)
        _mm_prefetch(reinterpret_cast<const char*>(blk + size_t(r) * rb + kPrefetchBlocks * 18),
                     _MM_HINT_T1);
    auto half = [&](int r) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + size_t(r) * rb + 2));
    };
    __m256i a[4];
    for (int r = 0; r < 4; ++r)
      a[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(half(r)), half(r + 4), 1);
    const __m256i t0 = _mm256_unpacklo_epi32(a[0], a[1]), t1 = _mm256_unpacklo_epi32(a[2], a[3]);
    const __m256i t2 = _mm256_unpackhi_epi32(a[0], a[1]), t3 = _mm256_unpackhi_epi32(a[2], a[3]);
    chunk[0] = _mm256_unpacklo_epi64(t0, t1);
    chunk[1] = _mm256_unpackhi_epi64(t0, t1);
    chunk[2] = _mm256_unpacklo_epi64(t2, t3);
    chunk[3] = _mm256_unpackhi_epi64(t2, t3);
    auto h = [&](int r) {
      uint16_t v;
      std::memcpy(&v, blk + size_t(r) * rb, 2);
      return short(v);
    };
    dw = _mm256_cvtph_ps(_mm_set_epi16(h(7), h(6), h(5), h(4), h(3), h(2), h(1), h(0)));
  } else {
    const uint8_t* p = src + size_t(b) * kQ4x8Bytes;
    prefetch_stream(p, kQ4x8Bytes);  // the group's stream from memory (kernels/stream_prefetch.h)
    for (int k = 0; k < 4; ++k)
      chunk[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k * 32));
    dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 128)));
  }
}

template <int RX, bool kDirect>
LAMINA_AVX2 void q4x8_tile(const uint8_t* src, size_t rb, const int8_t* const* xq,
                           const float* const* xd, const int32_t* const* xs, int64_t nb,
                           float* out /* [RX][8] */) {
  __m256 acc[RX];
  for (int c = 0; c < RX; ++c) acc[c] = _mm256_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    __m256i chunk[4];
    __m256 dw;
    q4x8_block<kDirect>(src, rb, b, chunk, dw);
    __m256i isum[RX];
    for (int c = 0; c < RX; ++c) isum[c] = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      const __m256i lo = _mm256_and_si256(chunk[k], lo4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(chunk[k], 4), lo4);
      for (int c = 0; c < RX; ++c) {
        int32_t a, h;
        std::memcpy(&a, xq[c] + b * kQK + 4 * k, 4);
        std::memcpy(&h, xq[c] + b * kQK + 16 + 4 * k, 4);
        isum[c] = _mm256_add_epi16(isum[c], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(a)));
        pin(isum[c]);
        isum[c] = _mm256_add_epi16(isum[c], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(h)));
        pin(isum[c]);
      }
    }
    for (int c = 0; c < RX; ++c) {
      __m256i s32 = _mm256_madd_epi16(isum[c], ones);
      s32 = _mm256_sub_epi32(s32, _mm256_set1_epi32(8 * xs[c][b]));
      acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xd[c][b])), _mm256_cvtepi32_ps(s32),
                               acc[c]);
    }
  }
  for (int c = 0; c < RX; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

// A two-group tile's sums [row][group] to out [RX][16].
template <int RX>
LAMINA_AVX2 inline void store_pair_tile(float* out, __m256 f0a, __m256 f0b, __m256 f1a,
                                        __m256 f1b) {
  _mm256_storeu_ps(out, f0a);
  _mm256_storeu_ps(out + 8, f0b);
  if constexpr (RX == 2) {
    _mm256_storeu_ps(out + 16, f1a);
    _mm256_storeu_ps(out + 24, f1b);
  }
}

// Activation rows [m0, m1) two at a time against the 16 weight rows from n: tile<RX>(m, xq, xd,
// xs, out) fills out [RX][16] for rows m..m + RX - 1, which go to y (added to it with acc).
template <class Tile>
void for_pair_tiles(const Q8Activations& x, int64_t m0, int64_t m1, int64_t n, float* y,
                    int64_t ldy, bool acc, const Tile& tile) {
  const int64_t nb = x.K / kQK;
  float out[2 * 16];
  for (int64_t m = m0; m < m1; m += 2) {
    const int rx = int(std::min<int64_t>(2, m1 - m));
    const int8_t* xq[2];
    const float* xd[2];
    const int32_t* xs[2];
    for (int c = 0; c < rx; ++c)
      xq[c] = x.q.data() + (m + c) * x.K, xd[c] = x.d.data() + (m + c) * nb,
      xs[c] = x.s.data() + (m + c) * nb;
    if (rx == 2)
      tile.template operator()<2>(m, xq, xd, xs, out);
    else
      tile.template operator()<1>(m, xq, xd, xs, out);
    for (int c = 0; c < rx; ++c)
      for (int r = 0; r < 16; ++r) {
        float& o = y[(m + c) * ldy + n + r];
        o = acc ? o + out[c * 16 + r] : out[c * 16 + r];
      }
  }
}

// Two groups of 8 rows (16 weight rows) x RX <= 2 activation rows over nb blocks of Q4_0x8. On
// AVX2 the broadcast of 4 activation bytes from memory costs more than the vpmaddubsw it feeds
// (Zen 3: 0.46 ns per broadcast + vpmaddubsw + vpaddw, 0.24 when one broadcast feeds two), so each
// broadcast here multiplies the same 4 elements of both groups. Both nibbles of a chunk sum into
// one int16 accumulator per group and row (8 products of pairs: 8 · 2 · 15 · 127 = 30480); the
// offset of 8 comes back per block as -8 · sum(x), shared by the two groups.
template <int RX>
LAMINA_AVX2 void q4x8_pair_tile(const uint8_t* g0, const uint8_t* g1, const int8_t* const* xq,
                                const float* const* xd, const int32_t* const* xs, int64_t nb,
                                bool stream, float* out /* [RX][16] */) {
  static_assert(RX == 1 || RX == 2);
  __m256 f0a = _mm256_setzero_ps(), f0b = f0a, f1a = f0a, f1b = f0a;  // [row][group]
  const __m256i lo4 = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b, g0 += kQ4x8Bytes, g1 += kQ4x8Bytes) {
    if (stream) {  // a tile reading the rows from memory: both streams (kernels/stream_prefetch.h)
      const size_t left = size_t(nb - b) * kQ4x8Bytes, gs = size_t(g1 - g0);
      prefetch_stream(g0, kQ4x8Bytes, left, gs);
      prefetch_stream(g1, kQ4x8Bytes, left, gs);
    }
    __m256i s0a, s0b, s1a, s1b;  // int16 sums [row][group]
    for (int k = 0; k < 4; ++k) {
      const __m256i ca = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g0 + 32 * k));
      const __m256i cb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g1 + 32 * k));
      const __m256i la = _mm256_and_si256(ca, lo4), lb = _mm256_and_si256(cb, lo4);
      const __m256i ha = _mm256_and_si256(_mm256_srli_epi16(ca, 4), lo4);
      const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(cb, 4), lo4);
      auto row = [&](__m256i& sa, __m256i& sb, const int8_t* x) LAMINA_AVX2_INLINE {
        int32_t l, h;
        std::memcpy(&l, x + 4 * k, 4);
        std::memcpy(&h, x + 16 + 4 * k, 4);
        const __m256i xl = _mm256_set1_epi32(l), xh = _mm256_set1_epi32(h);
        const __m256i pa = _mm256_maddubs_epi16(la, xl), pb = _mm256_maddubs_epi16(lb, xl);
        sa = k == 0 ? pa : _mm256_add_epi16(sa, pa);
        pin(sa);
        sb = k == 0 ? pb : _mm256_add_epi16(sb, pb);
        pin(sb);
        sa = _mm256_add_epi16(sa, _mm256_maddubs_epi16(ha, xh));
        pin(sa);
        sb = _mm256_add_epi16(sb, _mm256_maddubs_epi16(hb, xh));
        pin(sb);
      };
      row(s0a, s0b, xq[0] + b * kQK);
      if constexpr (RX == 2) row(s1a, s1b, xq[1] + b * kQK);
    }
    const __m256 da = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g0 + 128)));
    const __m256 db = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g1 + 128)));
    auto finish = [&](__m256& fa, __m256& fb, __m256i sa, __m256i sb, int c) LAMINA_AVX2_INLINE {
      const __m256i ones = _mm256_set1_epi16(1), off = _mm256_set1_epi32(-8 * xs[c][b]);
      const __m256 dx = _mm256_set1_ps(xd[c][b]);
      const __m256i ia = _mm256_add_epi32(_mm256_madd_epi16(sa, ones), off);
      const __m256i ib = _mm256_add_epi32(_mm256_madd_epi16(sb, ones), off);
      fa = _mm256_fmadd_ps(_mm256_mul_ps(da, dx), _mm256_cvtepi32_ps(ia), fa);
      fb = _mm256_fmadd_ps(_mm256_mul_ps(db, dx), _mm256_cvtepi32_ps(ib), fb);
    };
    finish(f0a, f0b, s0a, s0b, 0);
    if constexpr (RX == 2) finish(f1a, f1b, s1a, s1b, 1);
  }
  store_pair_tile<RX>(out, f0a, f0b, f1a, f1b);
}

template <int RX>
LAMINA_AVX2 void q8x8_tile(const uint8_t* packed, const int8_t* const* xq, const float* const* xd,
                           int64_t nb, float* out /* [RX][8] */) {
  __m256 acc[RX];
  for (int c = 0; c < RX; ++c) acc[c] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, packed += kQ8x8Bytes) {
    prefetch_stream(packed, kQ8x8Bytes);
    __m256i isum[RX];
    for (int c = 0; c < RX; ++c) isum[c] = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + k * 32));
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      for (int c = 0; c < RX; ++c) {
        int32_t a;
        std::memcpy(&a, xq[c] + b * kQK + 4 * k, 4);
        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(_mm256_set1_epi32(a), wv));
        isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(p, ones));
        pin(isum[c]);
      }
    }
    const __m256 dw =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + 256)));
    for (int c = 0; c < RX; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xd[c][b])),
                               _mm256_cvtepi32_ps(isum[c]), acc[c]);
  }
  for (int c = 0; c < RX; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

// Q8_0x8 as q4x8_pair_tile: two groups x RX <= 2 activation rows, each broadcast feeding both.
template <int RX>
LAMINA_AVX2 void q8x8_pair_tile(const uint8_t* g0, const uint8_t* g1, const int8_t* const* xq,
                                const float* const* xd, int64_t nb, bool stream,
                                float* out /* [RX][16] */) {
  static_assert(RX == 1 || RX == 2);
  __m256 f0a = _mm256_setzero_ps(), f0b = f0a, f1a = f0a, f1b = f0a;  // [row][group]
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b, g0 += kQ8x8Bytes, g1 += kQ8x8Bytes) {
    if (stream) {  // a tile reading the rows from memory: both streams (kernels/stream_prefetch.h)
      const size_t left = size_t(nb - b) * kQ8x8Bytes, gs = size_t(g1 - g0);
      prefetch_stream(g0, kQ8x8Bytes, left, gs);
      prefetch_stream(g1, kQ8x8Bytes, left, gs);
    }
    __m256i s0a, s0b, s1a, s1b;  // int32 sums [row][group]
    for (int k = 0; k < 8; ++k) {
      const __m256i wa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g0 + 32 * k));
      const __m256i wb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g1 + 32 * k));
      const __m256i aa = _mm256_sign_epi8(wa, wa), ab = _mm256_sign_epi8(wb, wb);
      auto row = [&](__m256i& sa, __m256i& sb, const int8_t* x) LAMINA_AVX2_INLINE {
        int32_t v;
        std::memcpy(&v, x + 4 * k, 4);
        const __m256i xv = _mm256_set1_epi32(v);
        const __m256i pa =
            _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(xv, wa)), ones);
        const __m256i pb =
            _mm256_madd_epi16(_mm256_maddubs_epi16(ab, _mm256_sign_epi8(xv, wb)), ones);
        sa = k == 0 ? pa : _mm256_add_epi32(sa, pa);
        pin(sa);
        sb = k == 0 ? pb : _mm256_add_epi32(sb, pb);
        pin(sb);
      };
      row(s0a, s0b, xq[0] + b * kQK);
      if constexpr (RX == 2) row(s1a, s1b, xq[1] + b * kQK);
    }
    const __m256 da = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g0 + 256)));
    const __m256 db = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g1 + 256)));
    auto finish = [&](__m256& fa, __m256& fb, __m256i sa, __m256i sb, int c) LAMINA_AVX2_INLINE {
      const __m256 dx = _mm256_set1_ps(xd[c][b]);
      fa = _mm256_fmadd_ps(_mm256_mul_ps(da, dx), _mm256_cvtepi32_ps(sa), fa);
      fb = _mm256_fmadd_ps(_mm256_mul_ps(db, dx), _mm256_cvtepi32_ps(sb), fb);
    };
    finish(f0a, f0b, s0a, s0b, 0);
    if constexpr (RX == 2) finish(f1a, f1b, s1a, s1b, 1);
  }
  store_pair_tile<RX>(out, f0a, f0b, f1a, f1b);
}

// Rows [n0, n1) (multiples of 8) of a Q8_0x8 tensor against activation rows [m0, m1).
void rows_q8x8_avx2(const Q8Activations& x, int64_t m0, int64_t m1, const uint8_t* w, int64_t n0,
                    int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t nb = x.K / kQK;
  const size_t group_bytes = size_t(nb) * kQ8x8Bytes;
  for (; n0 + 16 <= n1; n0 += 16) {
    const uint8_t* g0 = w + size_t(n0 / 8) * group_bytes;
    // the first tile streams the rows from memory; the others find them in the cache
    for_pair_tiles(x, m0, m1, n0, y, ldy, acc,
                   [&]<int RX>(int64_t m, const int8_t* const* xq, const float* const* xd,
                               const int32_t* const*, float* out) {
                     q8x8_pair_tile<RX>(g0, g0 + group_bytes, xq, xd, nb, m == m0, out);
                   });
  }
  float out[4 * 8];
  for (int64_t n = n0; n < n1; n += 8) {
    const uint8_t* packed = w + size_t(n / 8) * group_bytes;
    for (int64_t m = m0; m < m1; m += 4) {
      const int rx = int(std::min<int64_t>(4, m1 - m));
      const int8_t* xq[4];
      const float* xd[4];
      for (int c = 0; c < rx; ++c)
        xq[c] = x.q.data() + (m + c) * x.K, xd[c] = x.d.data() + (m + c) * nb;
      switch (rx) {
        case 4:
          q8x8_tile<4>(packed, xq, xd, nb, out);
          break;
        case 3:
          q8x8_tile<3>(packed, xq, xd, nb, out);
          break;
        case 2:
          q8x8_tile<2>(packed, xq, xd, nb, out);
          break;
        default:
          q8x8_tile<1>(packed, xq, xd, nb, out);
      }
      for (int c = 0; c < rx; ++c)
        for (int r = 0; r < 8; ++r) {
          float& o = y[(m + c) * ldy + n + r];
          o = acc ? o + out[c * 8 + r] : out[c * 8 + r];
        }
    }
  }
}

// Rows [n0, n1) in groups of 8 against activation rows [m0, m1) (packed per group when there
// are at least 8 activation rows, read in place otherwise); returns the first row not done.
// prepacked: w is a Q4_0x8 tensor (n0, n1 multiples of 8).
int64_t rows_q4x8_avx2(const Q8Activations& x, int64_t m0, int64_t m1, const uint8_t* w, size_t rb,
                       int64_t n0, int64_t n1, float* y, int64_t ldy, bool acc, bool prepacked) {
  const int64_t nb = x.K / kQK;
  const bool pack = !prepacked && m1 - m0 >= kPackMinRows;
  const size_t group_bytes = size_t(nb) * kQ4x8Bytes;
  thread_local std::vector<uint8_t> buf;
  if (pack) buf.resize(2 * group_bytes);
  float out[4 * 8];
  int64_t n = n0;
  if (pack || prepacked) {
    for (; n + 16 <= n1; n += 16) {  // pairs of groups (16 rows) first
      const uint8_t* g0 = prepacked ? w + size_t(n / 8) * group_bytes : buf.data();
      if (pack) {
        pack_q4x8(w + size_t(n) * rb, rb, nb, buf.data());
        pack_q4x8(w + size_t(n + 8) * rb, rb, nb, buf.data() + group_bytes);
      }
      // the first tile streams the rows from memory; the others find them in the cache
      for_pair_tiles(x, m0, m1, n, y, ldy, acc,
                     [&]<int RX>(int64_t m, const int8_t* const* xq, const float* const* xd,
                                 const int32_t* const* xs, float* out) {
                       q4x8_pair_tile<RX>(g0, g0 + group_bytes, xq, xd, xs, nb, m == m0, out);
                     });
    }
  }
  for (; n + 8 <= n1; n += 8) {
    const uint8_t* wg = prepacked ? w + size_t(n / 8) * group_bytes : w + size_t(n) * rb;
    if (pack) pack_q4x8(wg, rb, nb, buf.data());
    const uint8_t* packed = prepacked ? wg : buf.data();
    for (int64_t m = m0; m < m1; m += 4) {
      const int rx = int(std::min<int64_t>(4, m1 - m));
      const int8_t* xq[4];
      const float* xd[4];
      const int32_t* xs[4];
      for (int c = 0; c < rx; ++c)
        xq[c] = x.q.data() + (m + c) * x.K, xd[c] = x.d.data() + (m + c) * nb,
        xs[c] = x.s.data() + (m + c) * nb;
      auto tile = [&]<int RX>() {
        pack || prepacked ? q4x8_tile<RX, false>(packed, rb, xq, xd, xs, nb, out)
                          : q4x8_tile<RX, true>(wg, rb, xq, xd, xs, nb, out);
      };
      switch (rx) {
        case 4:
          tile.template operator()<4>();
          break;
        case 3:
          tile.template operator()<3>();
          break;
        case 2:
          tile.template operator()<2>();
          break;
        default:
          tile.template operator()<1>();
      }
      for (int c = 0; c < rx; ++c)
        for (int r = 0; r < 8; ++r) {
          float& o = y[(m + c) * ldy + n + r];
          o = acc ? o + out[c * 8 + r] : out[c * 8 + r];
        }
    }
  }
  return n;
}

template <DType Q>
void rows_avx2(const Q8Activations& x, int64_t m0, int64_t m1, const uint8_t* w, size_t rb,
               int64_t n0, int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t nb = x.K / kQK;
  if (Q == DType::Q4_0) n0 = rows_q4x8_avx2(x, m0, m1, w, rb, n0, n1, y, ldy, acc, false);
  float out[2 * 4];
  for (int64_t n = n0; n < n1; n += 2) {
    const int rw = n + 1 < n1 ? 2 : 1;
    const uint8_t* wr[2] = {w + size_t(n) * rb, w + size_t(n + rw - 1) * rb};
    for (int64_t m = m0; m < m1; m += 4) {
      const int rx = int(std::min<int64_t>(4, m1 - m));
      if (rw == 2)
        tile_rows_avx2<Q, 2>(x, m, rx, wr, nb, out);
      else
        tile_rows_avx2<Q, 1>(x, m, rx, wr, nb, out);
      for (int r = 0; r < rw; ++r)
        for (int c = 0; c < rx; ++c) {
          float& o = y[(m + c) * ldy + n + r];
          o = acc ? o + out[r * rx + c] : out[r * rx + c];
        }
    }
  }
}
#endif

}  // namespace

namespace {

// One block of 32 as ggml's quantize_row_q8_0_ref; s: the sum of q.
void q8_0_block_scalar(const float* v, int8_t* q, float& d_out, int32_t& s) {
  float amax = 0.f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(v[j]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  int32_t sum = 0;
  for (int j = 0; j < kQK; ++j) {
    q[j] = int8_t(std::roundf(v[j] * id));
    sum += q[j];
  }
  d_out = f16_to_f32(f32_to_f16(d));
  s = sum;
}

#if defined(__x86_64__)
// The same, 8 lanes at a time. roundf (ties away from zero) exactly: t = trunc(v), plus sign(v)
// where |v - t| >= 0.5 (v - t is exact). Blocks with a non-finite value take the scalar code.
LAMINA_AVX2 void q8_0_block_avx2(const float* v, int8_t* q, float& d_out, int32_t& s) {
  const __m256 sign = _mm256_set1_ps(-0.f), inf = _mm256_set1_ps(INFINITY);
  __m256 x[4], m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    x[k] = _mm256_loadu_ps(v + 8 * k);
    const __m256 a = _mm256_andnot_ps(sign, x[k]);
    m = _mm256_max_ps(m, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));  // NaN or inf
  }
  if (_mm256_movemask_ps(bad)) return q8_0_block_scalar(v, q, d_out, s);
  const float amax = hmax_avx2(m);
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f);
  __m256i i[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 p = _mm256_mul_ps(x[k], vid);
    const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), half, _CMP_GE_OQ);
    const __m256 step = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(sign, p)));
    i[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
  }
  s = hsum_epi32_avx2(_mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3])));
  const __m256i p =
      _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  d_out = f16_to_f32(f32_to_f16(d));
}
#endif

}  // namespace

void quantize_activations_q8_0(const float* x, int64_t M, int64_t K, Q8Activations& out,
                               QuantKernel kernel) {
  LAMINA_CHECK(K % kQK == 0, "Q8_0 activations: K = ", K, " is not a multiple of 32");
  const int64_t nb = K / kQK;
  out.M = M, out.K = K;
  out.q.resize(size_t(M * K));
  out.d.resize(size_t(M * nb));
  out.s.resize(size_t(M * nb));
  const bool avx2 = kernel != QuantKernel::kScalar;  // every x86 variant
#pragma omp parallel for schedule(static) if (M * K >= (1 << 16))
  for (int64_t i = 0; i < M * nb; ++i) {
    int8_t* q = out.q.data() + i * kQK;
#if defined(__x86_64__)
    if (avx2) {
      q8_0_block_avx2(x + i * kQK, q, out.d[size_t(i)], out.s[size_t(i)]);
      continue;
    }
#endif
    (void)avx2;
    q8_0_block_scalar(x + i * kQK, q, out.d[size_t(i)], out.s[size_t(i)]);
  }
}

const char* quant_kernel_name(QuantKernel k) {
  switch (k) {
    case QuantKernel::kAvx2:
      return "avx2";
    case QuantKernel::kAvxVnni:
      return "avxvnni";
    case QuantKernel::kAvx512Vnni:
      return "avx512vnni";
    default:
      return "scalar";
  }
}

std::vector<QuantKernel> runnable_quant_kernels() {
  std::vector<QuantKernel> v{QuantKernel::kScalar};
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  if (f.avx2 && f.fma && f.f16c) {
    v.push_back(QuantKernel::kAvx2);
    if (f.avx_vnni) v.push_back(QuantKernel::kAvxVnni);
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512_vnni)
      v.push_back(QuantKernel::kAvx512Vnni);
  }
#endif
  return v;
}

QuantKernel default_quant_kernel() {
  static const QuantKernel k = [] {
    const auto v = runnable_quant_kernels();
    const char* env = std::getenv("LAMINA_QUANT_KERNEL");
    if (!env || !*env) return v.back();
    std::string names;
    for (QuantKernel q : v) {
      if (std::string(env) == quant_kernel_name(q)) return q;
      names += std::string(names.empty() ? "" : ", ") + quant_kernel_name(q);
    }
    fail("LAMINA_QUANT_KERNEL=", env, ": this CPU runs ", names);
  }();
  return k;
}

void quant_dot_rows(QuantKernel k, DType wtype, const Q8Activations& x, int64_t m0, int64_t m1,
                    const uint8_t* w, size_t rb, int64_t n0, int64_t n1, float* y, int64_t ldy,
                    bool accumulate) {
  const bool x8 = wtype == DType::Q4_0x8 || wtype == DType::Q8_0x8;
  LAMINA_CHECK(wtype == DType::Q8_0 || wtype == DType::Q4_0 || x8,
               "quant_dot_rows: ", dtype_name(wtype), " is not Q8_0, Q4_0, Q4_0x8 or Q8_0x8");
  LAMINA_CHECK(0 <= m0 && m0 <= m1 && m1 <= x.M && rb == dtype_bytes(wtype, x.K),
               "quant_dot_rows: rows [", m0, ", ", m1, ") of ", x.M, " activations of width ", x.K,
               " against weight rows of ", rb, " bytes");
  if (x8) {
    LAMINA_CHECK(n0 % 8 == 0 && n1 % 8 == 0, "quant_dot_rows: ", dtype_name(wtype), " rows [", n0,
                 ", ", n1, ") are not whole groups of 8");
#if defined(__x86_64__)
    if (const auto isa = vnni_isa(k))
      return wtype == DType::Q4_0x8
                 ? q4_0x8_dot_rows_vnni(*isa, x, m0, m1, w, n0, n1, y, ldy, accumulate)
                 : q8_0x8_dot_rows_vnni(*isa, x, m0, m1, w, n0, n1, y, ldy, accumulate);
    if (k == QuantKernel::kAvx2) {
      if (wtype == DType::Q4_0x8)
        rows_q4x8_avx2(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate, true);
      else
        rows_q8x8_avx2(x, m0, m1, w, n0, n1, y, ldy, accumulate);
      return;
    }
#endif
    return wtype == DType::Q4_0x8
               ? rows_scalar_x8<DType::Q4_0x8>(x, m0, m1, w, n0, n1, y, ldy, accumulate)
               : rows_scalar_x8<DType::Q8_0x8>(x, m0, m1, w, n0, n1, y, ldy, accumulate);
  }
  auto run = [&]<DType Q>() {
#if defined(__x86_64__)
    // Q8_0 / Q4_0 as stored (not an inference Model's layout): the AVX2 code for every x86 variant.
    if (k != QuantKernel::kScalar)
      return rows_avx2<Q>(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
#endif
    rows_scalar<Q>(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
  };
  wtype == DType::Q8_0 ? run.template operator()<DType::Q8_0>()
                       : run.template operator()<DType::Q4_0>();
}

void repack_x8(DType from, const uint8_t* rows, int64_t N, int64_t K, uint8_t* out) {
  LAMINA_CHECK((from == DType::Q4_0 || from == DType::Q8_0) && N % 8 == 0 && K % kQK == 0,
               "repack_x8: [", N, ", ", K, "] ", dtype_name(from),
               " is not Q4_0 / Q8_0 in whole groups of 8 rows of whole blocks");
  const int64_t nb = K / kQK;
  const size_t rb = dtype_bytes(from, K), gb = from == DType::Q8_0 ? kQ8x8Bytes : kQ4x8Bytes;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < N / 8; ++g) {
    const uint8_t* src = rows + size_t(g) * 8 * rb;
    uint8_t* dst = out + size_t(g) * size_t(nb) * gb;
    from == DType::Q8_0 ? pack_q8x8(src, rb, nb, dst) : pack_q4x8(src, rb, nb, dst);
  }
}

}  // namespace lamina
