#include "quant/ggml_blocks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/k_quants.h"

namespace lamina {

namespace {
constexpr int64_t kQK = 32;  // QK8_0 == QK4_0

void put_f16(uint8_t* p, float v) {
  ggml_put_f16(p, v);
}
float get_f16(const uint8_t* p) {
  return ggml_get_f16(p);
}
}  // namespace

namespace {
constexpr GgmlType kAllTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                                  GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                                  GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// ggml's importance-weighted quantizers of the 32-value blocks (quantize_row_q4_0_impl and its
// q5 siblings): each block's weights are qw[j] * sqrt(sigma2 + x[j]^2), sigma2 the row's mean
// square, and its scale comes from the k-quants' searches.
float row_sigma2(const float* x, int64_t n) {
  return ggml_sum_squares(x, n) / float(n);
}
void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  ggml_importance_weights(xb, qw, sigma2, int(kQK), weight);
}
// Q5_0 / Q5_1's nibbles and fifth bits of 32 levels (value j and j + 16 share a byte).
void pack_q5(const uint8_t* L, uint8_t* qh_out, uint8_t* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xi0 = L[j], xi1 = L[j + 16];
    qs[j] = uint8_t((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= uint32_t((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= uint32_t((xi1 & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_out, &qh, 4);
}
}  // namespace

std::optional<GgmlType> ggml_type_from_id(uint32_t id) {
  for (GgmlType t : kAllTypes)
    if (uint32_t(t) == id) return t;
  return std::nullopt;
}

GgmlType parse_ggml_type(const std::string& name) {
  std::string n = name, all;
  for (auto& ch : n) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (GgmlType t : kAllTypes) {
    if (n == ggml_type_name(t)) return t;
    all += std::string(all.empty() ? "" : ", ") + ggml_type_name(t);
  }
  fail("unknown tensor type '", name, "' (", all, ")");
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return "f32";
    case GgmlType::F16:
      return "f16";
    case GgmlType::BF16:
      return "bf16";
    case GgmlType::Q8_0:
      return "q8_0";
    case GgmlType::Q4_0:
      return "q4_0";
    case GgmlType::Q5_0:
      return "q5_0";
    case GgmlType::Q5_1:
      return "q5_1";
    case GgmlType::Q2_K:
      return "q2_k";
    case GgmlType::Q3_K:
      return "q3_k";
    case GgmlType::Q4_K:
      return "q4_k";
    case GgmlType::Q5_K:
      return "q5_k";
    case GgmlType::Q6_K:
      return "q6_k";
  }
  return "?";
}

int64_t ggml_block_elems(GgmlType t) {
  if (is_k_quant(t)) return kSuperBlock;
  switch (t) {
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
      return kQK;
    default:
      return 1;
  }
}

size_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return 4;
    case GgmlType::F16:
    case GgmlType::BF16:
      return 2;
    case GgmlType::Q8_0:
      return 2 + kQK;
    case GgmlType::Q4_0:
      return 2 + kQK / 2;
    case GgmlType::Q5_0:
      return 2 + 4 + kQK / 2;  // 22
    case GgmlType::Q5_1:
      return 2 + 2 + 4 + kQK / 2;  // 24
    case GgmlType::Q2_K:
      return 16 + 64 + 2 + 2;  // 84
    case GgmlType::Q3_K:
      return 32 + 64 + 12 + 2;  // 110
    case GgmlType::Q4_K:
      return 2 + 2 + 12 + 128;  // 144
    case GgmlType::Q5_K:
      return 2 + 2 + 12 + 32 + 128;  // 176
    case GgmlType::Q6_K:
      return 128 + 64 + 16 + 2;  // 210
  }
  return 0;
}

size_t ggml_row_bytes(GgmlType t, int64_t n) {
  const int64_t b = ggml_block_elems(t);
  if (n % b != 0)
    fail(ggml_type_name(t), ": a row of ", n, " elements is not a multiple of the block size ", b);
  return size_t(n / b) * ggml_block_bytes(t);
}

void quantize_row(GgmlType t, const float* x, int64_t n, uint8_t* out, const float* importance) {
  if (is_k_quant(t)) return quantize_k_row(t, x, n, out, importance);
  const size_t bb = ggml_block_bytes(t);
  const float sigma2 = importance && t != GgmlType::Q8_0 ? row_sigma2(x, n) : 0.f;
  const float* qw = importance;
  float weight[kQK];
  switch (t) {
    case GgmlType::F32:
      std::memcpy(out, x, size_t(n) * 4);
      return;
    case GgmlType::F16:
      convert_from_f32(x, out, DType::F16, size_t(n));
      return;
    case GgmlType::BF16:
      convert_from_f32(x, out, DType::BF16, size_t(n));
      return;
    case GgmlType::Q8_0:  // ggml's quantize_q8_0 takes no importance
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += bb) {
        float amax = 0.f;
        for (int64_t j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        put_f16(out, d);
        for (int64_t j = 0; j < kQK; ++j) out[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
      }
      return;
    case GgmlType::Q4_0:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += bb) {
        if (qw) {  // quantize_row_q4_0_impl
          int8_t L[kQK];
          block_weights(x, qw + b * kQK, sigma2, weight);
          put_f16(out, ggml_make_qx_quants(kQK, 8, x, L, 1, weight));
          for (int j = 0; j < 16; ++j) out[2 + j] = uint8_t(L[j] | (L[j + 16] << 4));
          continue;
        }
        // The signed value of largest magnitude (the first one on ties) maps to -8.
        float amax = 0.f, mx = 0.f;
        for (int64_t j = 0; j < kQK; ++j)
          if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), mx = x[j];
        const float d = mx / -8.f, id = d != 0.f ? 1.f / d : 0.f;
        put_f16(out, d);
        for (int64_t j = 0; j < kQK / 2; ++j) {
          const uint8_t q0 = uint8_t(std::min<int>(15, int8_t(x[j] * id + 8.5f)));
          const uint8_t q1 = uint8_t(std::min<int>(15, int8_t(x[j + kQK / 2] * id + 8.5f)));
          out[2 + j] = uint8_t(q0 | (q1 << 4));
        }
      }
      return;
    case GgmlType::Q5_0:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += bb) {
        uint8_t L[kQK];
        if (qw) {  // quantize_row_q5_0_impl
          int8_t l8[kQK];
          block_weights(x, qw + b * kQK, sigma2, weight);
          put_f16(out, ggml_make_qx_quants(kQK, 16, x, l8, 1, weight));
          for (int j = 0; j < kQK; ++j) L[j] = uint8_t(l8[j]);
        } else {  // quantize_row_q5_0_ref
          float amax = 0.f, mx = 0.f;
          for (int j = 0; j < kQK; ++j)
            if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), mx = x[j];
          const float d = mx / -16, id = d ? 1.0f / d : 0.0f;
          put_f16(out, d);
          for (int j = 0; j < kQK; ++j)
            L[j] = uint8_t(std::min<int>(31, int8_t(x[j] * id + 16.5f)));
        }
        pack_q5(L, out + 2, out + 6);
      }
      return;
    case GgmlType::Q5_1:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += bb) {
        uint8_t L[kQK], Laux[kQK];
        if (qw) {  // quantize_row_q5_1_impl
          float min;
          block_weights(x, qw + b * kQK, sigma2, weight);
          const float d =
              ggml_make_qkx3_quants(kQK, 31, x, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
          put_f16(out, d);
          put_f16(out + 2, -min);
        } else {  // quantize_row_q5_1_ref
          float min = std::numeric_limits<float>::max(), max = -min;
          for (int j = 0; j < kQK; ++j) min = std::min(min, x[j]), max = std::max(max, x[j]);
          const float d = (max - min) / ((1 << 5) - 1), id = d ? 1.0f / d : 0.0f;
          put_f16(out, d);
          put_f16(out + 2, min);
          for (int j = 0; j < kQK; ++j) L[j] = uint8_t((x[j] - min) * id + 0.5f);
        }
        pack_q5(L, out + 4, out + 8);
      }
      return;
    default:
      fail("quantize_row: no quantizer for ", ggml_type_name(t));
  }
}

void dequantize_row(GgmlType t, const uint8_t* in, int64_t n, float* y) {
  if (is_k_quant(t)) return dequantize_k_row(t, in, n, y);
  const size_t bb = ggml_block_bytes(t);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(y, in, size_t(n) * 4);
      return;
    case GgmlType::F16:
      convert_to_f32(in, DType::F16, y, size_t(n));
      return;
    case GgmlType::BF16:
      convert_to_f32(in, DType::BF16, y, size_t(n));
      return;
    case GgmlType::Q8_0:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, in += bb, y += kQK) {
        const float d = get_f16(in);
        for (int64_t j = 0; j < kQK; ++j) y[j] = d * float(int8_t(in[2 + j]));
      }
      return;
    case GgmlType::Q4_0:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, in += bb, y += kQK) {
        const float d = get_f16(in);
        for (int64_t j = 0; j < kQK / 2; ++j) {
          y[j] = d * float((in[2 + j] & 0x0f) - 8);
          y[j + kQK / 2] = d * float((in[2 + j] >> 4) - 8);
        }
      }
      return;
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQK; ++b, in += bb, y += kQK) {
        const bool one = t == GgmlType::Q5_1;
        const float d = get_f16(in), m = one ? get_f16(in + 2) : 0.f;
        const uint8_t* qs = in + (one ? 8 : 6);
        uint32_t qh;
        std::memcpy(&qh, in + (one ? 4 : 2), 4);
        for (int j = 0; j < 16; ++j) {
          const int h0 = int(((qh >> (j + 0)) << 4) & 0x10), h1 = int((qh >> (j + 12)) & 0x10);
          const int x0 = ((qs[j] & 0x0F) | h0) - (one ? 0 : 16);
          const int x1 = ((qs[j] >> 4) | h1) - (one ? 0 : 16);
          y[j] = one ? float(x0) * d + m : float(x0) * d;
          y[j + 16] = one ? float(x1) * d + m : float(x1) * d;
        }
      }
      return;
    default:
      fail("dequantize_row: ", ggml_type_name(t), " has no decoder");
  }
}

}  // namespace lamina
