// ggml's k-quant codecs (see k_quants.h). The quantizers follow ggml-quants.c line by line: the
// order of every F32 operation matters for byte equality, so expressions keep ggml's grouping
// (w * x * l is (w * x) * l), integers convert to float where ggml's do, and levels are stored in
// the integer types ggml stores them in (a uint8_t level wraps where ggml's does).
#include "quant/k_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace lamina {

namespace {

constexpr int kQK = int(kSuperBlock);
constexpr float kGroupMaxEps = 1e-15f;  // GROUP_MAX_EPS: below it a group is all zero

void put_f16(uint8_t* p, float v) {
  ggml_put_f16(p, v);
}
float get_f16(const uint8_t* p) {
  return ggml_get_f16(p);
}

// make_q3_quants: Q3_K's sub-block levels -nmax..nmax-1 (returned + nmax), refined by moving
// one level at a time while the weighted fit improves (weights x^2).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L, bool do_rmse) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -float(nmax) / max;
  if (do_rmse) {
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      L[i] = int8_t(l);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
      int n_changed = 0;
      for (int i = 0; i < n; ++i) {
        const float w = x[i] * x[i];
        float slx = sumlx - w * x[i] * float(L[i]);
        if (slx > 0) {
          float sl2 = suml2 - w * float(L[i]) * float(L[i]);
          int new_l = ggml_nearest_int(x[i] * sl2 / slx);
          new_l = std::max(-nmax, std::min(nmax - 1, new_l));
          if (new_l != L[i]) {
            slx += w * x[i] * float(new_l);
            sl2 += w * float(new_l) * float(new_l);
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
              L[i] = int8_t(new_l), sumlx = slx, suml2 = sl2;
              ++n_changed;
            }
          }
        }
      }
      if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
  }
  for (int i = 0; i < n; ++i) {
    int l = ggml_nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = int8_t(l + nmax);
  }
  return 1 / iscale;
}

// make_qp_quants: the super-block's quantization of its (non-negative) sub-block scales or mins
// on levels 0..nmax, weighted by each sub-block's total importance.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = float(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = uint8_t(ggml_nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * float(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * float(is) + float(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale_is * x[i]);
      l = std::min(nmax, l);
      const float diff = x[i] - scale_is * float(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) best_mse = mse, iscale = iscale_is;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = ggml_nearest_int(iscale * x[i]);
    l = std::min(nmax, l);
    L[i] = uint8_t(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - w * x[i] * float(L[i]);
      float sl2 = suml2 - w * float(L[i]) * float(L[i]);
      if (slx > 0 && sl2 > 0) {
        int new_l = ggml_nearest_int(x[i] * sl2 / slx);
        new_l = std::min(nmax, new_l);
        if (new_l != L[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = uint8_t(new_l), sumlx = slx, suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Sub-block j's 6-bit scale and min in Q4_K / Q5_K's 12 bytes (get_scale_min_k4).
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63, *m = q[j + 4] & 63;
  } else {
    *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}
// ... and their packing: scales 0..3 and mins 0..3 whole, 4..7 as nibbles with the top 2 bits in
// the first eight bytes' top bits.
void put_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t* s) {
  if (j < 4) {
    s[j] = ls;
    s[j + 4] = lm;
  } else {
    s[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    s[j - 4] |= uint8_t((ls >> 4) << 6);
    s[j - 0] |= uint8_t((lm >> 4) << 6);
  }
}
// Q3_K's 16 signed 6-bit scales (stored + 32): low nibbles in bytes 0..7, top 2 bits in 8..11.
void put_q3_scale(int j, int l, uint8_t* s) {
  if (j < 8)
    s[j] = uint8_t(l & 0xF);
  else
    s[j - 8] |= uint8_t((l & 0xF) << 4);
  l >>= 4;
  s[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
}
int get_q3_scale(int j, const uint8_t* s) {
  int8_t sc = int8_t(j < 8 ? s[j] & 0xF : s[j - 8] >> 4);
  sc = int8_t((sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
  return sc;
}
// 2-bit levels of 256 values: byte l of each 32 holds values l, l+32, l+64, l+96 of its 128.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] =
          uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
// Q4_K / Q5_K's 4-bit levels: byte l of each 32 holds values l (low) and l + 32 (high) of its 64;
// Q5_K's fifth bits go to qh, two bits per 64 values.
void pack_4bit(const uint8_t* L, uint8_t* q) {
  for (int j = 0; j < kQK; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}
void pack_5bit(const uint8_t* L, uint8_t* qh, uint8_t* ql) {
  std::memset(qh, 0, kQK / 8);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQK; n += 64, ql += 32, m1 = uint8_t(m1 << 2), m2 = uint8_t(m2 << 2))
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) l1 -= 16, qh[j] |= m1;
      if (l2 > 15) l2 -= 16, qh[j] |= m2;
      ql[j] = uint8_t(l1 | (l2 << 4));
    }
}

// ---- Q2_K: 84 bytes, scales @0, qs @16, d @80, dmin @82.
void quantize_q2_k_block(const float* x, uint8_t* y, const float* qw) {
  uint8_t* sc = y;
  uint8_t L[kQK], Laux[16];
  float weights[16], mins[16], scales[16];
  if (!qw) {  // quantize_row_q2_K_ref
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = ggml_make_qkx3_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                        -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) sc[j] = uint8_t(ggml_nearest_int(iscale * scales[j]));
      put_f16(y + 80, max_scale / q4scale);
    } else {
      for (int j = 0; j < 16; ++j) sc[j] = 0;
      put_f16(y + 80, 0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) sc[j] |= uint8_t(ggml_nearest_int(iscale * mins[j]) << 4);
      put_f16(y + 82, max_min / q4scale);
    } else {
      put_f16(y + 82, 0.f);
    }
  } else {  // quantize_row_q2_K_impl
    float sw[16];
    uint8_t Ls[16], Lm[16];
    const float sigma2 = ggml_sum_squares(x, kQK) / float(kQK);
    for (int j = 0; j < 16; ++j) {
      sw[j] = ggml_importance_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weights);
      scales[j] = ggml_make_qkx3_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                        -0.9f, 0.05f, 36, false);
    }
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    put_f16(y + 80, dm);
    put_f16(y + 82, mm);
    for (int j = 0; j < 16; ++j) sc[j] = uint8_t(Ls[j] | (Lm[j] << 4));
  }
  // Both: the levels again against the stored (rounded) scales and mins.
  const float d_all = get_f16(y + 80), m_all = get_f16(y + 82);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * float(sc[j] & 0xF);
    if (!d) continue;
    const float dm = m_all * float(sc[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      const int l = ggml_nearest_int((x[16 * j + ii] + dm) / d);
      L[16 * j + ii] = uint8_t(std::max(0, std::min(3, l)));
    }
  }
  pack_2bit(L, y + 16);
}

// ---- Q3_K: 110 bytes, hmask @0, qs @32, scales @96, d @108.
void quantize_q3_k_block(const float* x, uint8_t* y, const float* qw) {
  uint8_t* sc = y + 96;
  int8_t L[kQK];
  float scales[16];
  std::memset(sc, 0, 12);
  if (!qw) {  // quantize_row_q3_K_ref
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) amax = scale, max_scale = scales[j];
    }
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        int8_t l = int8_t(ggml_nearest_int(iscale * scales[j]));
        l = int8_t(std::max<int>(-32, std::min<int>(31, l)) + 32);
        put_q3_scale(j, l, sc);
      }
      put_f16(y + 108, 1 / iscale);
    } else {
      put_f16(y + 108, 0.f);
    }
  } else {  // quantize_row_q3_K_impl
    float weight[16], sw[16];
    int8_t Ls[16];
    const float sigma2 = 2 * ggml_sum_squares(x, kQK) / float(kQK);
    for (int j = 0; j < 16; ++j) {
      sw[j] = ggml_importance_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
      scales[j] = ggml_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    const float d_block = ggml_make_qx_quants(16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < 16; ++j) put_q3_scale(j, Ls[j], sc);
    put_f16(y + 108, d_block);
  }
  const float d_all = get_f16(y + 108);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * float(get_q3_scale(j, sc));
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = ggml_nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = int8_t(std::max(-4, std::min(3, l)) + 4);
    }
  }
  // The high bit of value j goes to bit j / 32 of hmask[j % 32].
  uint8_t* hmask = y;
  std::memset(hmask, 0, 32);
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < kQK; ++j) {
    if (L[j] > 3) hmask[m] |= hm, L[j] = int8_t(L[j] - 4);
    if (++m == 32) m = 0, hm = uint8_t(hm << 1);
  }
  pack_2bit(reinterpret_cast<const uint8_t*>(L), y + 32);
}

// ---- Q4_K (144 bytes: d @0, dmin @2, scales @4, qs @16) and Q5_K (176: qh @16, qs @48).
void quantize_q45_k_block(bool five, const float* x, uint8_t* y, const float* qw) {
  const int nmax = five ? 31 : 15;
  uint8_t* sc = y + 4;
  uint8_t L[kQK], Laux[32];
  float weights[32], mins[8], scales[8];
  std::memset(sc, 0, 12);
  if (!qw) {  // quantize_row_q4_K_ref / quantize_row_q5_K_ref
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = five ? ggml_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j],
                                               Laux, -0.5f, 0.1f, 15, false)
                       : ggml_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j],
                                               Laux, -1.f, 0.1f, 20, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      uint8_t ls = uint8_t(ggml_nearest_int(inv_scale * scales[j]));
      uint8_t lm = uint8_t(ggml_nearest_int(inv_min * mins[j]));
      ls = std::min<uint8_t>(63, ls), lm = std::min<uint8_t>(63, lm);
      put_scale_min_k4(j, ls, lm, sc);
    }
    put_f16(y, max_scale / 63.f);
    put_f16(y + 2, max_min / 63.f);
  } else {  // quantize_row_q4_K_impl / quantize_row_q5_K_impl
    uint8_t Ls[8], Lm[8];
    float sw[8];
    const float sigma2 = 2 * ggml_sum_squares(x, kQK) / float(kQK);
    for (int j = 0; j < 8; ++j) {
      sw[j] = ggml_importance_weights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
      scales[j] = ggml_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                        -0.9f, 0.05f, 36, false);
    }
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j)
      put_scale_min_k4(j, std::min<uint8_t>(63, Ls[j]), std::min<uint8_t>(63, Lm[j]), sc);
    put_f16(y, d_block);
    put_f16(y + 2, m_block);
  }
  const float d_all = get_f16(y), m_all = get_f16(y + 2);
  for (int j = 0; j < 8; ++j) {
    uint8_t s, m;
    get_scale_min_k4(j, sc, &s, &m);
    const float d = d_all * float(s);
    if (!d) continue;
    const float dm = m_all * float(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = ggml_nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
  if (five)
    pack_5bit(L, y + 16, y + 48);
  else
    pack_4bit(L, y + 16);
}

// ---- Q6_K: 210 bytes, ql @0, qh @128, scales @192, d @208.
void quantize_q6_k_block(const float* x, uint8_t* y, const float* qw) {
  int8_t L[kQK];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    // quantize_row_q6_K_impl passes the importance as the weights; _ref passes none (x^2).
    const float scale =
        ggml_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : nullptr);
    scales[ib] = scale;
    const float abs_scale = std::fabs(scale);
    if (abs_scale > max_abs_scale) max_abs_scale = abs_scale, max_scale = scale;
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    return;
  }
  const float iscale = -128.f / max_scale;
  put_f16(y + 208, 1 / iscale);
  auto* sc = reinterpret_cast<int8_t*>(y + 192);
  for (int ib = 0; ib < 16; ++ib)
    sc[ib] = int8_t(std::min(127, ggml_nearest_int(iscale * scales[ib])));
  const float d_all = get_f16(y + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * float(sc[j]);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = ggml_nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = int8_t(std::max(-32, std::min(31, l)) + 32);
    }
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int j = 0; j < kQK; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
      const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                      ((L[j + l + 96] >> 4) << 6));
    }
}

}  // namespace

float ggml_sum_squares(const float* x, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

float ggml_importance_weights(const float* x, const float* qw, float sigma2, int n, float* w) {
  float sum = 0;
  for (int i = 0; i < n; ++i) w[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
  for (int i = 0; i < n; ++i) sum += w[i];
  return sum;
}

void ggml_put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

float ggml_get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

int ggml_nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

float ggml_make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type,
                          const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -float(nmax) / max;
  if (rmse_type == 0) {
    for (int i = 0; i < n; ++i) {
      const int l = ggml_nearest_int(iscale * x[i]);
      L[i] = int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
    }
    return 1 / iscale;
  }
  bool return_early = false;
  if (rmse_type < 0) rmse_type = -rmse_type, return_early = true;
  auto weight = [&](int i) {
    return qw               ? qw[i]
           : rmse_type == 1 ? x[i] * x[i]
           : rmse_type == 2 ? 1.f
           : rmse_type == 3 ? std::fabs(x[i])
                            : std::sqrt(std::fabs(x[i]));
  };
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = ggml_nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = int8_t(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(float(nmax) + 0.1f * float(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = weight(i);
      sumlx += w * x[i] * float(l);
      suml2 += w * float(l) * float(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = ggml_nearest_int(iscale * x[i]);
        L[i] = int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float ggml_make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                            float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                            bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::memset(L, 0, size_t(n));
    *the_min = -min;
    return 0.f;
  }
  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    const int l = ggml_nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    float diff = scale * float(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_mad += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = ggml_nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * float(l);
      sum_l2 += w * float(l) * float(l);
      sum_xl += w * float(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * float(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        mad += weights[i] * diff;
      }
      if (mad < best_mad) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_mad = mad;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

bool is_k_quant(GgmlType t) {
  return t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q4_K || t == GgmlType::Q5_K ||
         t == GgmlType::Q6_K;
}

void quantize_k_row(GgmlType t, const float* x, int64_t n, uint8_t* out, const float* importance) {
  const size_t bb = ggml_block_bytes(t);
  ggml_row_bytes(t, n);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, x += kSuperBlock, out += bb) {
    const float* qw = importance ? importance + b * kSuperBlock : nullptr;
    switch (t) {
      case GgmlType::Q2_K:
        quantize_q2_k_block(x, out, qw);
        break;
      case GgmlType::Q3_K:
        quantize_q3_k_block(x, out, qw);
        break;
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        quantize_q45_k_block(t == GgmlType::Q5_K, x, out, qw);
        break;
      case GgmlType::Q6_K:
        quantize_q6_k_block(x, out, qw);
        break;
      default:
        fail("quantize_k_row: ", ggml_type_name(t), " is not a k-quant");
    }
  }
}

void dequantize_k_row(GgmlType t, const uint8_t* in, int64_t n, float* y) {
  const size_t bb = ggml_block_bytes(t);
  ggml_row_bytes(t, n);
  for (int64_t b = 0; b < n / kSuperBlock; ++b, in += bb) {
    switch (t) {
      case GgmlType::Q2_K: {
        const uint8_t* sc = in;
        const uint8_t* q = in + 16;
        const float d = get_f16(in + 80), min = get_f16(in + 82);
        int is = 0;
        for (int n0 = 0; n0 < kQK; n0 += 128, q += 32)
          for (int shift = 0; shift < 8; shift += 2)
            for (int half = 0; half < 2; ++half) {
              const uint8_t s = sc[is++];
              const float dl = d * float(s & 0xF), ml = min * float(s >> 4);
              for (int l = 0; l < 16; ++l)
                *y++ = dl * float(int8_t((q[l + 16 * half] >> shift) & 3)) - ml;
            }
        break;
      }
      case GgmlType::Q3_K: {
        const uint8_t* hm = in;
        const uint8_t* q = in + 32;
        const uint8_t* sc = in + 96;
        const float d_all = get_f16(in + 108);
        int is = 0;
        uint8_t m = 1;
        for (int n0 = 0; n0 < kQK; n0 += 128, q += 32)
          for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1))
            for (int half = 0; half < 2; ++half) {
              const float dl = d_all * float(get_q3_scale(is++, sc));
              for (int l = 0; l < 16; ++l) {
                const int i = l + 16 * half;
                *y++ = dl * float(int8_t((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4));
              }
            }
        break;
      }
      case GgmlType::Q4_K:
      case GgmlType::Q5_K: {
        const bool five = t == GgmlType::Q5_K;
        const float d = get_f16(in), dmin = get_f16(in + 2);
        const uint8_t* sc = in + 4;
        const uint8_t* qh = in + 16;  // Q5_K: every value's fifth bit
        const uint8_t* q = in + (five ? 48 : 16);
        for (int j = 0; j < 8; j += 2, q += 32) {  // 64 values: low nibbles, then high nibbles
          uint8_t s1, m1, s2, m2;
          get_scale_min_k4(j, sc, &s1, &m1), get_scale_min_k4(j + 1, sc, &s2, &m2);
          const float d1 = d * float(s1), o1 = dmin * float(m1);
          const float d2 = d * float(s2), o2 = dmin * float(m2);
          const int u1 = 1 << j, u2 = 2 << j;
          for (int l = 0; l < 32; ++l)
            *y++ = d1 * float((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - o1;
          for (int l = 0; l < 32; ++l)
            *y++ = d2 * float((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - o2;
        }
        break;
      }
      case GgmlType::Q6_K: {
        const uint8_t* ql = in;
        const uint8_t* qh = in + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(in + 192);
        const float d = get_f16(in + 208);
        for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128)
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * float(sc[is]) * float(q1);
            y[l + 32] = d * float(sc[is + 2]) * float(q2);
            y[l + 64] = d * float(sc[is + 4]) * float(q3);
            y[l + 96] = d * float(sc[is + 6]) * float(q4);
          }
        break;
      }
      default:
        fail("dequantize_k_row: ", ggml_type_name(t), " is not a k-quant");
    }
  }
}

}  // namespace lamina
