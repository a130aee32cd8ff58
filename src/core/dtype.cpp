#include "core/dtype.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "quant/ggml_blocks.h"
#include "quant/nf4.h"

namespace lamina {

GgmlType ggml_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return GgmlType::F32;
    case DType::F16:
      return GgmlType::F16;
    case DType::BF16:
      return GgmlType::BF16;
    case DType::Q8_0:
      return GgmlType::Q8_0;
    case DType::Q4_0:
      return GgmlType::Q4_0;
    case DType::Q4_K:
      return GgmlType::Q4_K;
    case DType::Q5_K:
      return GgmlType::Q5_K;
    case DType::Q6_K:
      return GgmlType::Q6_K;
    case DType::Q5_0:
      return GgmlType::Q5_0;
    case DType::Q5_1:
      return GgmlType::Q5_1;
    case DType::Q2_K:
      return GgmlType::Q2_K;
    case DType::Q3_K:
      return GgmlType::Q3_K;
    case DType::NF4:
      fail("nf4 has no ggml type (a frozen training base only)");
    case DType::Q4_0x8:
    case DType::Q8_0x8:
    case DType::Q4_Kx8:
    case DType::Q6_Kx8:
      break;
  }
  fail(dtype_name(t), " (repacked for products) has no ggml type");
}

DType dtype_from_ggml(GgmlType g) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q5_0,
                  DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    if (ggml_type_of(d) == g) return d;
  fail("ggml type ", uint32_t(g), " has no lamina dtype");
}

bool dtype_is_quantized(DType t) {
  return t != DType::F32 && t != DType::F16 && t != DType::BF16;
}

size_t dtype_size(DType t) {
  LAMINA_CHECK(!dtype_is_quantized(t), "dtype_size: ", dtype_name(t), " is a block type");
  return t == DType::F32 ? 4 : 2;
}

int64_t dtype_block(DType t) {
  if (t == DType::NF4) return kNf4Block;
  if (t == DType::Q4_0x8) t = DType::Q4_0;
  if (t == DType::Q8_0x8) t = DType::Q8_0;
  if (t == DType::Q4_Kx8) t = DType::Q4_K;
  if (t == DType::Q6_Kx8) t = DType::Q6_K;
  return dtype_is_quantized(t) ? ggml_block_elems(ggml_type_of(t)) : 1;
}

size_t dtype_bytes(DType t, int64_t n) {
  if (t == DType::NF4) return nf4_bytes(n);  // a whole tensor of n elements
  if (t == DType::Q4_0x8) t = DType::Q4_0;   // the same bytes, rearranged
  if (t == DType::Q8_0x8) t = DType::Q8_0;
  if (t == DType::Q4_Kx8) t = DType::Q4_K;
  if (t == DType::Q6_Kx8) t = DType::Q6_K;
  return dtype_is_quantized(t) ? ggml_row_bytes(ggml_type_of(t), n) : size_t(n) * dtype_size(t);
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q4_0:
      return "Q4_0";
    case DType::Q4_K:
      return "Q4_K";
    case DType::Q5_K:
      return "Q5_K";
    case DType::Q6_K:
      return "Q6_K";
    case DType::Q5_0:
      return "Q5_0";
    case DType::Q5_1:
      return "Q5_1";
    case DType::Q2_K:
      return "Q2_K";
    case DType::Q3_K:
      return "Q3_K";
    case DType::NF4:
      return "NF4";
    case DType::Q4_0x8:
      return "Q4_0x8";
    case DType::Q4_Kx8:
      return "Q4_Kx8";
    case DType::Q6_Kx8:
      return "Q6_Kx8";
    case DType::Q8_0x8:
      return "Q8_0x8";
  }
  return "?";
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "float32";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    default:
      return "?";
  }
  return "?";
}

std::optional<DType> dtype_from_safetensors(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "F16") return DType::F16;
  if (name == "BF16") return DType::BF16;
  return std::nullopt;
}

DType parse_dtype(const std::string& name, const std::string& what, bool quantized) {
  std::string s = name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "f32" || s == "float32" || s == "float") return DType::F32;
  if (s == "f16" || s == "float16" || s == "half") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (quantized && s == "q8_0") return DType::Q8_0;
  if (quantized && s == "q4_0") return DType::Q4_0;
  fail(what, ": unsupported dtype '", name,
       quantized ? "' (expected f32, f16, bf16, q8_0 or q4_0)" : "' (expected f32, f16 or bf16)");
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  int32_t exp = int32_t((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffff;
  if (((u >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00 | (man ? 0x200 : 0));
  if (exp >= 31) return uint16_t(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    man |= 0x800000;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | uint32_t(exp) << 10 | man >> 13, rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;  // may carry into exponent: correct
  return uint16_t(half);
}

void convert_to_f32(const void* src, DType t, float* dst, size_t n) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q2_K:
    case DType::Q3_K:
      dequantize_row(ggml_type_of(t), static_cast<const uint8_t*>(src), int64_t(n), dst);
      return;
    case DType::NF4:
      dequantize_nf4(static_cast<const uint8_t*>(src), int64_t(n), 0, int64_t(n), dst);
      return;
    case DType::Q4_0x8:
    case DType::Q8_0x8:
    case DType::Q4_Kx8:
    case DType::Q6_Kx8:
      fail(dtype_name(t), " (repacked for products) does not convert");
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      auto* s = static_cast<const uint16_t*>(src);
#pragma omp simd
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
  }
}

void convert_from_f32(const float* src, void* dst, DType t, size_t n) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q2_K:
    case DType::Q3_K:
      quantize_row(ggml_type_of(t), src, int64_t(n), static_cast<uint8_t*>(dst));
      return;
    case DType::NF4:
      quantize_nf4(src, int64_t(n), static_cast<uint8_t*>(dst));
      return;
    case DType::Q4_0x8:
    case DType::Q8_0x8:
    case DType::Q4_Kx8:
    case DType::Q6_Kx8:
      fail(dtype_name(t), " is made by repacking rows (repack_x8), not by conversion");
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
#pragma omp simd
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
  }
}

}  // namespace lamina
