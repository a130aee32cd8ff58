#include "quant/ggml_blocks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace lamina {

namespace {
constexpr int64_t kQK = 32;    // QK8_0 == QK4_0
constexpr int64_t kQKK = 256;  // QK_K: the k-quants' super-block

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
}  // namespace

std::optional<GgmlType> ggml_type_from_id(uint32_t id) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    if (uint32_t(t) == id) return t;
  return std::nullopt;
}

GgmlType parse_ggml_type(const std::string& name) {
  std::string n = name;
  for (auto& ch : n) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (n == "f32") return GgmlType::F32;
  if (n == "f16") return GgmlType::F16;
  if (n == "bf16") return GgmlType::BF16;
  if (n == "q8_0") return GgmlType::Q8_0;
  if (n == "q4_0") return GgmlType::Q4_0;
  fail("unknown tensor type '", name, "' (f32, f16, bf16, q8_0, q4_0)");
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
  if (t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K) return kQKK;
  return t == GgmlType::Q8_0 || t == GgmlType::Q4_0 ? kQK : 1;
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
    case GgmlType::Q4_K:
      return 2 + 2 + 12 + kQKK / 2;  // 144
    case GgmlType::Q5_K:
      return 2 + 2 + 12 + kQKK / 8 + kQKK / 2;  // 176
    case GgmlType::Q6_K:
      return kQKK / 2 + kQKK / 4 + kQKK / 16 + 2;  // 210
  }
  return 0;
}

size_t ggml_row_bytes(GgmlType t, int64_t n) {
  const int64_t b = ggml_block_elems(t);
  if (n % b != 0)
    fail(ggml_type_name(t), ": a row of ", n, " elements is not a multiple of the block size ", b);
  return size_t(n / b) * ggml_block_bytes(t);
}

void quantize_row(GgmlType t, const float* x, int64_t n, uint8_t* out) {
  const size_t bb = ggml_block_bytes(t);
  switch (t) {
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      fail("quantizing to ", ggml_type_name(t), " is not implemented (lamina reads it)");
    case GgmlType::F32:
      std::memcpy(out, x, size_t(n) * 4);
      return;
    case GgmlType::F16:
      convert_from_f32(x, out, DType::F16, size_t(n));
      return;
    case GgmlType::BF16:
      convert_from_f32(x, out, DType::BF16, size_t(n));
      return;
    case GgmlType::Q8_0:
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
  }
}

void dequantize_row(GgmlType t, const uint8_t* in, int64_t n, float* y) {
  const size_t bb = ggml_block_bytes(t);
  switch (t) {
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQKK; ++b, in += bb) {
        const float d = get_f16(in), dmin = get_f16(in + 2);
        const uint8_t* sc = in + 4;  // 12 bytes: 6-bit scale and min of each sub-block
        const bool five = t == GgmlType::Q5_K;
        const uint8_t* qh =
            in + 16;  // Q5_K: every value's fifth bit, 2 bits per pair of sub-blocks
        const uint8_t* q = in + (five ? 48 : 16);
        // Sub-block j's 6-bit scale and min (ggml's get_scale_min_k4).
        auto scale_min = [&](int j, int& s, int& m) {
          if (j < 4) {
            s = sc[j] & 63, m = sc[j + 4] & 63;
          } else {
            s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
          }
        };
        for (int j = 0; j < 8; j += 2, q += 32, y += 64) {  // 64 values: low nibbles, high nibbles
          int s1, m1, s2, m2;
          scale_min(j, s1, m1), scale_min(j + 1, s2, m2);
          const float d1 = d * float(s1), o1 = dmin * float(m1);
          const float d2 = d * float(s2), o2 = dmin * float(m2);
          const int u1 = 1 << j, u2 = 2 << j;
          for (int l = 0; l < 32; ++l)
            y[l] = d1 * float((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - o1;
          for (int l = 0; l < 32; ++l)
            y[32 + l] = d2 * float((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - o2;
        }
      }
      return;
    case GgmlType::Q6_K:
      ggml_row_bytes(t, n);
      for (int64_t b = 0; b < n / kQKK; ++b, in += bb) {
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
      }
      return;
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
  }
}

}  // namespace lamina
