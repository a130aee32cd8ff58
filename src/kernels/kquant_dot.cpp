#include "kernels/kquant_dot.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include "kernels/avx2_util.h"
#include "kernels/stream_prefetch.h"
#endif

#include "core/error.h"
#include "kernels/int8_tiles_vnni.h"
#include "kernels/q4_k_x8.h"
#include "kernels/q6_k_x8.h"
#include "quant/k_quants.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 256;

size_t kquant_block_bytes(DType t) {
  return t == DType::Q4_K ? 144 : t == DType::Q5_K ? 176 : 210;
}

// Q4_K / Q5_K: the 8 6-bit scales and mins of a block's 12 scale bytes (ggml's get_scale_min_k4).
void scales_mins_k4(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63;
    mn[j] = q[j + 4] & 63;
    sc[j + 4] = uint8_t((q[j + 8] & 0xF) | ((q[j] >> 6) << 4));
    mn[j + 4] = uint8_t((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
  }
}

// Block b's unsigned quants (0..15 / 0..31 / 0..63) in element order.
void unpack_block(DType t, const uint8_t* blk, uint8_t* u) {
  if (t == DType::Q6_K) {
    const uint8_t *ql = blk, *qh = blk + 128;
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, u += 128)
      for (int l = 0; l < 32; ++l) {
        u[l] = uint8_t((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
        u[l + 32] = uint8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
        u[l + 64] = uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
        u[l + 96] = uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
      }
    return;
  }
  const bool five = t == DType::Q5_K;
  const uint8_t* qh = blk + 16;
  const uint8_t* qs = blk + (five ? 48 : 16);
  for (int j = 0; j < 4; ++j, qs += 32, u += 64)
    for (int l = 0; l < 32; ++l) {
      u[l] = uint8_t((qs[l] & 0xF) + (five && (qh[l] >> (2 * j) & 1) ? 16 : 0));
      u[l + 32] = uint8_t((qs[l] >> 4) + (five && (qh[l] >> (2 * j + 1) & 1) ? 16 : 0));
    }
}

// Scalar reference: one weight row against one activation row, block by block.
float dot_scalar(DType t, const uint8_t* w, const int8_t* xq, const float* xd, const int16_t* bs,
                 int64_t nb) {
  float sum = 0.f;
  uint8_t u[kQK];
  const size_t bb = kquant_block_bytes(t);
  for (int64_t b = 0; b < nb; ++b, w += bb, xq += kQK, bs += 16) {
    unpack_block(t, w, u);
    if (t == DType::Q6_K) {
      const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
      int32_t sumi = 0;
      for (int s = 0; s < 16; ++s) {
        int32_t d = 0;
        for (int j = 0; j < 16; ++j) d += (int32_t(u[16 * s + j]) - 32) * xq[16 * s + j];
        sumi += sc[s] * d;
      }
      sum += ggml_get_f16(w + 208) * xd[b] * float(sumi);
      continue;
    }
    uint8_t sc[8], mn[8];
    scales_mins_k4(w + 4, sc, mn);
    int32_t sumi = 0, summ = 0;
    for (int s = 0; s < 8; ++s) {
      int32_t d = 0;
      for (int j = 0; j < 32; ++j) d += int32_t(u[32 * s + j]) * xq[32 * s + j];
      sumi += sc[s] * d;
      summ += mn[s] * (bs[2 * s] + bs[2 * s + 1]);
    }
    sum += ggml_get_f16(w) * xd[b] * float(sumi) - ggml_get_f16(w + 2) * xd[b] * float(summ);
  }
  return sum;
}

// The stored type of a repacked one.
DType plain_type(DType t) {
  return t == DType::Q4_Kx8 ? DType::Q4_K : t == DType::Q6_Kx8 ? DType::Q6_K : t;
}

// Row r of the group of 8 rows of a Q4_Kx8 / Q6_Kx8 tensor at group, as a plain row at out.
void unpack_x8_row(DType t, const uint8_t* group, int r, int64_t K, uint8_t* out) {
  if (t == DType::Q4_Kx8)
    unpack_q4_k_x8_row(group, r, K, out);
  else
    unpack_q6_k_x8_row(group, r, K, out);
}

// Q4_Kx8 / Q6_Kx8 rows are unpacked to plain rows first (the reference reads the stored layout).
void rows_scalar(DType t, const Q8KActivations& x, int64_t m0, int64_t m1, const uint8_t* w,
                 size_t rb, int64_t n0, int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t K = x.K, nb = K / kQK;
  thread_local std::vector<uint8_t> plain;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + size_t(n) * rb;
    if (plain_type(t) != t) {
      plain.resize(rb);
      unpack_x8_row(t, w + size_t(n / 8) * 8 * rb, int(n % 8), K, plain.data());
      row = plain.data();
    }
    for (int64_t m = m0; m < m1; ++m) {
      const float v = dot_scalar(plain_type(t), row, x.q.data() + m * K, x.d.data() + m * nb,
                                 x.bsum.data() + m * (K / 16), nb);
      float& o = y[m * ldy + n];
      o = acc ? o + v : v;
    }
  }
}

#if defined(__x86_64__)

// One weight row against RX activation rows. Per block, 32 unsigned quants at a time (one
// sub-block of Q4_K / Q5_K, two of Q6_K) go through vpmaddubsw with the activations' int8 (pair
// sums within int16: 2 · 63 · 127) and vpmaddwd with the sub-block scales into int32 lanes; the
// block's lanes are then scaled by d_w · d_x in F32. The mins (Q4_K / Q5_K) and Q6_K's offset
// of 32 are applied per block from the activations' sub-block sums.
// Per 128-bit half, 16-bit lanes holding byte pair (2i, 2i + 1) of a register: lane i of 16-bit
// values broadcast (ggml's get_scale_shuffle_k4 for i = 0..7).
LAMINA_AVX2 inline __m256i broadcast_u16_lane(__m256i v, int i) {
  return _mm256_shuffle_epi8(v, _mm256_set1_epi16(short((2 * i) | ((2 * i + 1) << 8))));
}

template <DType T, int RX>
LAMINA_AVX2 void row_avx2(const uint8_t* w, const int8_t* const* xq, const float* const* xd,
                          const int16_t* const* bs, int64_t nb, float* out /* [RX] */) {
  constexpr size_t bb = T == DType::Q4_K ? 144 : T == DType::Q5_K ? 176 : 210;
  __m256 acc[RX];
  __m128 acc_min[RX];
  for (int c = 0; c < RX; ++c) acc[c] = _mm256_setzero_ps(), acc_min[c] = _mm_setzero_ps();
  const __m256i lo4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
  const __m256i one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < nb; ++b, w += bb) {
    // The rows stream from memory (kernels/stream_prefetch.h), which the hardware prefetcher
    // alone does not keep up with for Q4_K (10 GB/s without it, 24 with, on a 151 MB product; Q6_K
    // 18 and 24).
    prefetch_stream(w, bb);
    __m256i sumi[RX];
    for (int c = 0; c < RX; ++c) sumi[c] = _mm256_setzero_si256();
    // 32 unsigned quants (part = which 32 of the block) times each row's activations, through
    // the 16-bit scales given per 128-bit half.
    auto multiply = [&](int part, __m256i u, __m256i scales) LAMINA_AVX2_INLINE {
      for (int c = 0; c < RX; ++c) {
        const __m256i xv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[c] + b * kQK + 32 * part));
        sumi[c] = _mm256_add_epi32(sumi[c], _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), scales));
        pin(sumi[c]);
      }
    };
    float dw;
    if constexpr (T == DType::Q6_K) {
      // int8 scales: pair (s, s + 1) as 16-bit lanes, s in the low half, s + 1 in the high one
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192));
      auto pair = [&](int s) LAMINA_AVX2_INLINE {
        const __m128i sel =
            _mm_set_epi64x(0x0101010101010101LL * (s + 1), 0x0101010101010101LL * s);
        return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, sel));
      };
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 128 + 32 * h));
        const __m256i hi0 = _mm256_slli_epi16(_mm256_and_si256(qh, three), 4);
        const __m256i hi1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4);
        const __m256i hi2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4);
        const __m256i hi3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4);
        multiply(4 * h + 0, _mm256_or_si256(_mm256_and_si256(ql0, lo4), hi0), pair(8 * h + 0));
        multiply(4 * h + 1, _mm256_or_si256(_mm256_and_si256(ql1, lo4), hi1), pair(8 * h + 2));
        multiply(4 * h + 2, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), lo4), hi2),
                 pair(8 * h + 4));
        multiply(4 * h + 3, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), lo4), hi3),
                 pair(8 * h + 6));
      }
      dw = _cvtsh_ss(uint16_t(w[208] | (w[209] << 8)));
      // The quants' offset of 32: sum_s sc_s · 32 · bsum_s, lane by lane (all lanes share d).
      const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
      for (int c = 0; c < RX; ++c) {
        const __m256i bsv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs[c] + b * 16));
        sumi[c] = _mm256_sub_epi32(sumi[c], _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsv), 5));
      }
    } else {
      // The 12 scale bytes -> 8 scales and 8 mins (ggml's get_scale_min_k4, four words at once).
      uint32_t u[4];
      std::memcpy(u, w + 4, 12);
      constexpr uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
      u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
      const uint32_t mins_lo = u[1] & m1;
      u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
      u[2] = mins_lo;
      u[0] &= m1;
      const __m256i sm =
          _mm256_cvtepu8_epi16(_mm_set_epi32(int(u[3]), int(u[2]), int(u[1]), int(u[0])));
      const __m128i mins = _mm256_extracti128_si256(sm, 1);
      const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
      const uint8_t* qs = w + (T == DType::Q5_K ? 48 : 16);
      __m256i qh = _mm256_setzero_si256();
      if constexpr (T == DType::Q5_K)
        qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16));
      for (int j = 0; j < 4; ++j) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * j));
        __m256i u0 = _mm256_and_si256(raw, lo4);
        __m256i u1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), lo4);
        if constexpr (T == DType::Q5_K) {  // the fifth bit: bit 2j (low) / 2j + 1 (high) of qh
          u0 = _mm256_or_si256(
              u0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j), one), 4));
          u1 = _mm256_or_si256(
              u1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * j + 1), one), 4));
        }
        multiply(2 * j, u0, broadcast_u16_lane(scales, 2 * j));
        multiply(2 * j + 1, u1, broadcast_u16_lane(scales, 2 * j + 1));
      }
      dw = _cvtsh_ss(uint16_t(w[0] | (w[1] << 8)));
      const float dmin = _cvtsh_ss(uint16_t(w[2] | (w[3] << 8)));
      for (int c = 0; c < RX; ++c) {  // the mins: sum_s m_s · (bsum_2s + bsum_2s+1)
        const __m256i bsv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs[c] + b * 16));
        const __m128i pairs =
            _mm_hadd_epi16(_mm256_castsi256_si128(bsv), _mm256_extracti128_si256(bsv, 1));
        acc_min[c] = _mm_fmadd_ps(_mm_set1_ps(dmin * xd[c][b]),
                                  _mm_cvtepi32_ps(_mm_madd_epi16(mins, pairs)), acc_min[c]);
      }
    }
    for (int c = 0; c < RX; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[c][b]), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
  }
  for (int c = 0; c < RX; ++c) {
    __m128 m = _mm_add_ps(acc_min[c], _mm_movehl_ps(acc_min[c], acc_min[c]));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    out[c] = hsum_avx2(acc[c]) - _mm_cvtss_f32(m);
  }
}

template <DType T>
void rows_avx2(const Q8KActivations& x, int64_t m0, int64_t m1, const uint8_t* w, size_t rb,
               int64_t n0, int64_t n1, float* y, int64_t ldy, bool acc) {
  const int64_t K = x.K, nb = K / kQK;
  for (int64_t m = m0; m < m1; m += 4) {
    const int rx = int(std::min<int64_t>(4, m1 - m));
    const int8_t* xq[4];
    const float* xd[4];
    const int16_t* bs[4];
    for (int c = 0; c < rx; ++c)
      xq[c] = x.q.data() + (m + c) * K, xd[c] = x.d.data() + (m + c) * nb,
      bs[c] = x.bsum.data() + (m + c) * (K / 16);
    for (int64_t n = n0; n < n1; ++n) {
      float out[4];
      const uint8_t* wr = w + size_t(n) * rb;
      switch (rx) {
        case 4:
          row_avx2<T, 4>(wr, xq, xd, bs, nb, out);
          break;
        case 3:
          row_avx2<T, 3>(wr, xq, xd, bs, nb, out);
          break;
        case 2:
          row_avx2<T, 2>(wr, xq, xd, bs, nb, out);
          break;
        default:
          row_avx2<T, 1>(wr, xq, xd, bs, nb, out);
      }
      for (int c = 0; c < rx; ++c) {
        float& o = y[(m + c) * ldy + n];
        o = acc ? o + out[c] : out[c];
      }
    }
  }
}

#endif

}  // namespace

bool is_integer_kquant(DType t) {
  return t == DType::Q4_K || t == DType::Q4_Kx8 || t == DType::Q5_K || t == DType::Q6_K ||
         t == DType::Q6_Kx8;
}

namespace {

// One block of 256 as ggml's quantize_row_q8_K_ref: the first element of largest |x| sets the
// scale (its sign kept).
void q8_k_block_scalar(const float* v, int8_t* q, float& d, int16_t* bsum) {
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < kQK; ++j)
    if (std::fabs(v[j]) > amax) amax = std::fabs(v[j]), max = v[j];
  if (amax == 0.f) {
    std::memset(q, 0, kQK);
    std::fill_n(bsum, 16, int16_t(0));
    d = 0.f;
    return;
  }
  const float iscale = -127.f / max;
  for (int j = 0; j < kQK; ++j) q[j] = int8_t(std::min(127, ggml_nearest_int(iscale * v[j])));
  for (int s = 0; s < 16; ++s) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += q[16 * s + j];
    bsum[s] = int16_t(sum);
  }
  d = 1.f / iscale;
}

#if defined(__x86_64__)
// The same, 8 lanes at a time: vcvtps2dq rounds to nearest even, as ggml_nearest_int's
// 1.5 · 2^23 trick does (|iscale · x| <= 127 here), and vpacks saturates at 127 as its min does.
LAMINA_AVX2 void q8_k_block_avx2(const float* v, int8_t* q, float& d, int16_t* bsum) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m = _mm256_setzero_ps();
  for (int j = 0; j < kQK; j += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + j)));
  const float amax = hmax_avx2(m);
  // all zero, or non-finite values: the reference's result (whatever NaN makes of it)
  if (!(amax > 0.f) || !std::isfinite(amax)) return q8_k_block_scalar(v, q, d, bsum);
  int first = 0;
  while (first < kQK - 1 && std::fabs(v[first]) != amax) ++first;
  const float iscale = -127.f / v[first];
  const __m256 is = _mm256_set1_ps(iscale);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int j = 0; j < kQK; j += 32) {
    __m256i i[4];
    for (int k = 0; k < 4; ++k)
      i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(v + j + 8 * k)));
    // bsum: 16 elements are two vectors of 8
    for (int k = 0; k < 4; k += 2) {
      bsum[(j + 8 * k) / 16] = int16_t(hsum_epi32_avx2(_mm256_add_epi32(i[k], i[k + 1])));
    }
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), _mm256_permutevar8x32_epi32(p, order));
  }
  d = 1.f / iscale;
}
#endif

}  // namespace

void quantize_activations_q8_k(const float* x, int64_t M, int64_t K, Q8KActivations& out,
                               QuantKernel kernel) {
  LAMINA_CHECK(K % kQK == 0, "Q8_K activations: K = ", K, " is not a multiple of 256");
  const int64_t nb = K / kQK;
  out.M = M, out.K = K;
  out.q.resize(size_t(M * K));
  out.d.resize(size_t(M * nb));
  out.bsum.resize(size_t(M * K / 16));
  const bool avx2 = kernel != QuantKernel::kScalar;  // every x86 variant
#pragma omp parallel for schedule(static) if (M * K >= (1 << 16))
  for (int64_t i = 0; i < M * nb; ++i) {
    int8_t* q = out.q.data() + i * kQK;
    int16_t* bs = out.bsum.data() + i * 16;
#if defined(__x86_64__)
    if (avx2) {
      q8_k_block_avx2(x + i * kQK, q, out.d[size_t(i)], bs);
      continue;
    }
#endif
    (void)avx2;
    q8_k_block_scalar(x + i * kQK, q, out.d[size_t(i)], bs);
  }
}

void kquant_dot_rows(QuantKernel k, DType wtype, const Q8KActivations& x, int64_t m0, int64_t m1,
                     const uint8_t* w, size_t rb, int64_t n0, int64_t n1, float* y, int64_t ldy,
                     bool accumulate) {
  const bool x8 = wtype == DType::Q4_Kx8 || wtype == DType::Q6_Kx8;
  LAMINA_CHECK(!x8 || (n0 % 8 == 0 && n1 % 8 == 0), "kquant_dot_rows: ", dtype_name(wtype),
               " rows [", n0, ", ", n1, ") are not whole groups of 8");
#if defined(__x86_64__)
  if (const auto isa = vnni_isa(k); x8 && isa)
    return wtype == DType::Q4_Kx8
               ? q4_k_x8_dot_rows_vnni(*isa, x, m0, m1, w, n0, n1, y, ldy, accumulate)
               : q6_k_x8_dot_rows_vnni(*isa, x, m0, m1, w, n0, n1, y, ldy, accumulate);
  if (k != QuantKernel::kScalar) {  // the other types as stored: AVX2 for every x86 variant
    switch (wtype) {
      case DType::Q4_Kx8:
        return q4_k_x8_dot_rows_avx2(x, m0, m1, w, n0, n1, y, ldy, accumulate);
      case DType::Q6_Kx8: {  // no AVX2 tile (a Model repacks Q6_K only for VNNI): group by group
        thread_local std::vector<uint8_t> plain;
        plain.resize(8 * rb);
        for (int64_t n = n0; n < n1; n += 8) {
          for (int r = 0; r < 8; ++r)
            unpack_x8_row(wtype, w + size_t(n) * rb, r, x.K, plain.data() + size_t(r) * rb);
          rows_avx2<DType::Q6_K>(x, m0, m1, plain.data(), rb, 0, 8, y + n, ldy, accumulate);
        }
        return;
      }
      case DType::Q4_K:
        return rows_avx2<DType::Q4_K>(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
      case DType::Q5_K:
        return rows_avx2<DType::Q5_K>(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
      case DType::Q6_K:
        return rows_avx2<DType::Q6_K>(x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
      default:
        break;
    }
  }
#endif
  rows_scalar(wtype, x, m0, m1, w, rb, n0, n1, y, ldy, accumulate);
}

bool q6_k_repacked() {
  return vnni_isa(default_quant_kernel()).has_value();
}

}  // namespace lamina
