#include "quant/nf4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace lamina {
namespace {

// bitsandbytes' NF4 code book (functional.py get_4bit_type("nf4")), exact F32 values.
const float kLevels[16] = {
    -0x1p+0f,        -0x1.647362p-1f, -0x1.0cd66p-1f,  -0x1.94654p-2f,
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0.0f,
    0x1.45f5fep-4f,  0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
    0x1.c3497p-2f,   0x1.200f56p-1f,  0x1.722766p-1f,  0x1p+0f,
};

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as torch computes it in F32 on
// a CPU (linspace with a fused multiply-add), sorted: kDynamic[127] = 0, kDynamic[255] = 1. The
// values come from tests/reference/bnb_nf4_ref.py's port of bitsandbytes' functional.py.
const float kDynamic[256] = {
    -0x1.fc6666p-1f,  -0x1.f53334p-1f,  -0x1.eep-1f,      -0x1.e6ccccp-1f,  -0x1.df999ap-1f,
    -0x1.d86666p-1f,  -0x1.d13334p-1f,  -0x1.cap-1f,      -0x1.c2ccccp-1f,  -0x1.bb999ap-1f,
    -0x1.b46666p-1f,  -0x1.ad3334p-1f,  -0x1.a6p-1f,      -0x1.9eccccp-1f,  -0x1.97999ap-1f,
    -0x1.906666p-1f,  -0x1.893334p-1f,  -0x1.82p-1f,      -0x1.7accccp-1f,  -0x1.73999ap-1f,
    -0x1.6c6668p-1f,  -0x1.653334p-1f,  -0x1.5ep-1f,      -0x1.56ccccp-1f,  -0x1.4f999ap-1f,
    -0x1.486668p-1f,  -0x1.413334p-1f,  -0x1.3ap-1f,      -0x1.32ccccp-1f,  -0x1.2b999ap-1f,
    -0x1.246668p-1f,  -0x1.1d3334p-1f,  -0x1.16p-1f,      -0x1.0eccccp-1f,  -0x1.079998p-1f,
    -0x1.006666p-1f,  -0x1.f26664p-2f,  -0x1.e4p-2f,      -0x1.d59998p-2f,  -0x1.c73334p-2f,
    -0x1.b8ccccp-2f,  -0x1.aa6666p-2f,  -0x1.9cp-2f,      -0x1.8d9998p-2f,  -0x1.7f3334p-2f,
    -0x1.70ccccp-2f,  -0x1.626666p-2f,  -0x1.54p-2f,      -0x1.459998p-2f,  -0x1.373334p-2f,
    -0x1.28ccccp-2f,  -0x1.1a6668p-2f,  -0x1.0cp-2f,      -0x1.fb3332p-3f,  -0x1.de6666p-3f,
    -0x1.c1999ap-3f,  -0x1.a4ccccp-3f,  -0x1.88p-3f,      -0x1.6b3334p-3f,  -0x1.4e6666p-3f,
    -0x1.31999ap-3f,  -0x1.14ccccp-3f,  -0x1.fp-4f,       -0x1.b66668p-4f,  -0x1.93d70ap-4f,
    -0x1.8851eep-4f,  -0x1.7ccccep-4f,  -0x1.7147aep-4f,  -0x1.65c29p-4f,   -0x1.5a3d7p-4f,
    -0x1.4eb854p-4f,  -0x1.433334p-4f,  -0x1.37ae14p-4f,  -0x1.2c28f6p-4f,  -0x1.20a3d6p-4f,
    -0x1.151ebap-4f,  -0x1.09999ap-4f,  -0x1.fc28f6p-5f,  -0x1.e51ebap-5f,  -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f,  -0x1.ap-5f,       -0x1.88f5c2p-5f,  -0x1.71eb86p-5f,  -0x1.5ae146p-5f,
    -0x1.43d70ap-5f,  -0x1.2ccccep-5f,  -0x1.15c29p-5f,   -0x1.fd70a4p-6f,  -0x1.cf5c2ap-6f,
    -0x1.a147aep-6f,  -0x1.733334p-6f,  -0x1.451ebap-6f,  -0x1.170a3ep-6f,  -0x1.d1eb86p-7f,
    -0x1.75c29p-7f,   -0x1.3e76c8p-7f,  -0x1.2c083p-7f,   -0x1.19999ap-7f,  -0x1.072b02p-7f,
    -0x1.e978d4p-8f,  -0x1.c49ba6p-8f,  -0x1.9fbe76p-8f,  -0x1.7ae148p-8f,  -0x1.56041ap-8f,
    -0x1.3126e8p-8f,  -0x1.0c49bap-8f,  -0x1.ced914p-9f,  -0x1.851eb8p-9f,  -0x1.3b645ap-9f,
    -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f,
    -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f,
    -0x1.b43528p-19f, -0x1.27476ep-21f, 0x0p+0f,          0x1.27476ep-21f,  0x1.b43528p-19f,
    0x1.040bfep-17f,  0x1.64840cp-16f,  0x1.6f0068p-15f,  0x1.15df66p-14f,  0x1.743e96p-14f,
    0x1.47ae16p-13f,  0x1.19ce0ap-12f,  0x1.8fc506p-12f,  0x1.02de02p-11f,  0x1.3dd982p-11f,
    0x1.78d5p-11f,    0x1.b3d07cp-11f,  0x1.eecbfep-11f,  0x1.4fdf3ap-10f,  0x1.e353f8p-10f,
    0x1.3b645ap-9f,   0x1.851eb8p-9f,   0x1.ced914p-9f,   0x1.0c49bap-8f,   0x1.3126e8p-8f,
    0x1.56041ap-8f,   0x1.7ae148p-8f,   0x1.9fbe76p-8f,   0x1.c49ba6p-8f,   0x1.e978d4p-8f,
    0x1.072b02p-7f,   0x1.19999ap-7f,   0x1.2c083p-7f,    0x1.3e76c8p-7f,   0x1.75c29p-7f,
    0x1.d1eb86p-7f,   0x1.170a3ep-6f,   0x1.451ebap-6f,   0x1.733334p-6f,   0x1.a147aep-6f,
    0x1.cf5c2ap-6f,   0x1.fd70a4p-6f,   0x1.15c29p-5f,    0x1.2ccccep-5f,   0x1.43d70ap-5f,
    0x1.5ae146p-5f,   0x1.71eb86p-5f,   0x1.88f5c2p-5f,   0x1.ap-5f,        0x1.b70a3ep-5f,
    0x1.ce147ap-5f,   0x1.e51ebap-5f,   0x1.fc28f6p-5f,   0x1.09999ap-4f,   0x1.151ebap-4f,
    0x1.20a3d6p-4f,   0x1.2c28f6p-4f,   0x1.37ae14p-4f,   0x1.433334p-4f,   0x1.4eb854p-4f,
    0x1.5a3d7p-4f,    0x1.65c29p-4f,    0x1.7147aep-4f,   0x1.7ccccep-4f,   0x1.8851eep-4f,
    0x1.93d70ap-4f,   0x1.b66668p-4f,   0x1.fp-4f,        0x1.14ccccp-3f,   0x1.31999ap-3f,
    0x1.4e6666p-3f,   0x1.6b3334p-3f,   0x1.88p-3f,       0x1.a4ccccp-3f,   0x1.c1999ap-3f,
    0x1.de6666p-3f,   0x1.fb3332p-3f,   0x1.0cp-2f,       0x1.1a6668p-2f,   0x1.28ccccp-2f,
    0x1.373334p-2f,   0x1.459998p-2f,   0x1.54p-2f,       0x1.626666p-2f,   0x1.70ccccp-2f,
    0x1.7f3334p-2f,   0x1.8d9998p-2f,   0x1.9cp-2f,       0x1.aa6666p-2f,   0x1.b8ccccp-2f,
    0x1.c73334p-2f,   0x1.d59998p-2f,   0x1.e4p-2f,       0x1.f26664p-2f,   0x1.006666p-1f,
    0x1.079998p-1f,   0x1.0eccccp-1f,   0x1.16p-1f,       0x1.1d3334p-1f,   0x1.246668p-1f,
    0x1.2b999ap-1f,   0x1.32ccccp-1f,   0x1.3ap-1f,       0x1.413334p-1f,   0x1.486668p-1f,
    0x1.4f999ap-1f,   0x1.56ccccp-1f,   0x1.5ep-1f,       0x1.653334p-1f,   0x1.6c6668p-1f,
    0x1.73999ap-1f,   0x1.7accccp-1f,   0x1.82p-1f,       0x1.893334p-1f,   0x1.906666p-1f,
    0x1.97999ap-1f,   0x1.9eccccp-1f,   0x1.a6p-1f,       0x1.ad3334p-1f,   0x1.b46666p-1f,
    0x1.bb999ap-1f,   0x1.c2ccccp-1f,   0x1.cap-1f,       0x1.d13334p-1f,   0x1.d86666p-1f,
    0x1.df999ap-1f,   0x1.e6ccccp-1f,   0x1.eep-1f,       0x1.f53334p-1f,   0x1.fc6666p-1f,
    0x1p+0f,
};

// NF4: index = number of midpoints T[k] = f32(f32(c[k] + c[k+1]) / 2) strictly below s (a value on
// a midpoint takes the lower level: torch.bucketize), s already scaled to [-1, 1].
struct Nf4Thresholds {
  float t[15];
  Nf4Thresholds() {
    for (int k = 0; k < 15; ++k) t[k] = (kLevels[k] + kLevels[k + 1]) / 2.0f;
  }
};
const Nf4Thresholds& thresholds() {
  static const Nf4Thresholds t;
  return t;
}
uint8_t nf4_index(float s) {
  const float* t = thresholds().t;
  return uint8_t(std::lower_bound(t, t + 15, s) - t);
}

// bitsandbytes' CPU 8-bit blockwise quantizer: a 65536-slot grid over [-1, 1]; slot j holds the
// number of midpoints 0.5f * (c[i] + c[i+1]) strictly below v_j = -1 + 2j / 65535 (in F32).
const std::vector<uint8_t>& dynamic_lut() {
  static const std::vector<uint8_t> lut = [] {
    float mid[255];
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (kDynamic[i] + kDynamic[i + 1]);
    std::vector<uint8_t> l(65536);
    for (int j = 0; j < 65536; ++j) {
      const float v = -1.0f + (2.0f * float(j)) / 65535.0f;
      l[size_t(j)] = uint8_t(std::lower_bound(mid, mid + 255, v) - mid);
    }
    return l;
  }();
  return lut;
}
uint8_t dynamic_code(float s) {
  s = std::clamp(s, -1.0f, 1.0f);
  const float t = (s + 1.0f) * 0.5f;
  const float u = std::fma(t, 65535.0f, 0.5f);  // one rounding, as the FMA bitsandbytes compiles
  return dynamic_lut()[size_t(u)];              // truncation toward zero
}

struct Layout {
  int64_t n, blocks, nested;
  size_t codes, scales, mean, total;  // byte offsets
  explicit Layout(int64_t n_) : n(n_), blocks(n_ / kNf4Block) {
    nested = (blocks + kNf4NestedBlock - 1) / kNf4NestedBlock;
    codes = size_t(n / 2);
    scales = (codes + size_t(blocks) + 3) / 4 * 4;
    mean = scales + 4 * size_t(nested);
    total = mean + 4;
  }
};

}  // namespace

size_t nf4_bytes(int64_t n) {
  LAMINA_CHECK(n % kNf4Block == 0, "nf4: ", n, " elements are not whole blocks of 64");
  return Layout(n).total;
}

const float* nf4_levels() {
  return kLevels;
}
const float* nf4_dynamic_map() {
  return kDynamic;
}

void quantize_nf4(const float* x, int64_t n, uint8_t* out) {
  const Layout L(n);
  LAMINA_CHECK(n % kNf4Block == 0, "nf4: ", n, " elements are not whole blocks of 64");
  std::vector<float> absmax(static_cast<size_t>(L.blocks));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < L.blocks; ++b) {
    const float* v = x + b * kNf4Block;
    float am = 0.0f;
    for (int64_t i = 0; i < kNf4Block; ++i) am = std::max(am, std::fabs(v[i]));
    absmax[size_t(b)] = am;
    const float inv = 1.0f / std::max(am, 1e-38f);  // torch: reciprocal, then multiply
    uint8_t* o = out + b * kNf4Block / 2;
    for (int64_t i = 0; i < kNf4Block; i += 2) {
      const uint8_t hi = nf4_index(std::clamp(v[i] * inv, -1.0f, 1.0f));
      const uint8_t lo = nf4_index(std::clamp(v[i + 1] * inv, -1.0f, 1.0f));
      o[i / 2] = uint8_t(hi << 4 | lo);
    }
  }
  // Double quantisation of the absmax values around their mean.
  double sum = 0;
  for (float a : absmax) sum += a;
  const float mean = L.blocks ? float(sum / double(L.blocks)) : 0.0f;
  uint8_t* codes = out + L.codes;
  float* scales = reinterpret_cast<float*>(out + L.scales);
  for (int64_t g = 0; g < L.nested; ++g) {
    const int64_t b0 = g * kNf4NestedBlock, b1 = std::min(L.blocks, b0 + kNf4NestedBlock);
    float am = 0.0f;
    for (int64_t b = b0; b < b1; ++b) am = std::max(am, std::fabs(absmax[size_t(b)] - mean));
    scales[g] = am;
    if (am == 0.0f) {  // an all-zero block: codes 0, scale 0
      std::memset(codes + b0, 0, size_t(b1 - b0));
      continue;
    }
    const float inv = 1.0f / am;
    for (int64_t b = b0; b < b1; ++b) codes[b] = dynamic_code((absmax[size_t(b)] - mean) * inv);
  }
  std::memset(out + L.codes + size_t(L.blocks), 0, L.scales - L.codes - size_t(L.blocks));
  std::memcpy(out + L.mean, &mean, 4);
}

void dequantize_nf4(const uint8_t* t, int64_t n, int64_t first, int64_t count, float* y) {
  const Layout L(n);
  LAMINA_CHECK(first % kNf4Block == 0 && count % kNf4Block == 0 && first + count <= n,
               "nf4: range [", first, ", ", first + count, ") is not whole blocks of ", n);
  const uint8_t* codes = t + L.codes;
  const float* scales = reinterpret_cast<const float*>(t + L.scales);
  float mean;
  std::memcpy(&mean, t + L.mean, 4);
  for (int64_t b = first / kNf4Block; b < (first + count) / kNf4Block; ++b) {
    float a = kDynamic[codes[b]] * scales[b / kNf4NestedBlock];
    a = a + mean;  // a separate rounding, as bitsandbytes adds the offset after dequantising
    const uint8_t* p = t + b * kNf4Block / 2;
    float* o = y + (b * kNf4Block - first);
    for (int64_t i = 0; i < kNf4Block / 2; ++i) {
      o[2 * i] = kLevels[p[i] >> 4] * a;
      o[2 * i + 1] = kLevels[p[i] & 15] * a;
    }
  }
}

}  // namespace lamina
