// The repacked integer products (Q4_0x8, Q8_0x8: kernels/quant_dot.h; Q4_Kx8, Q6_Kx8)
// with vpdpbusd, which multiplies 4 unsigned by 4 signed bytes and adds the 4 products to an int32
// lane in one instruction — where AVX2 needs vpmaddubsw (int16 pair sums), an int16 add, and a
// vpmaddwd to widen. Same layouts, same lanes (8 weight rows per register, 4 activations
// broadcast), same exact int32 sums per block as the AVX2 and scalar kernels:
//   Q4_0x8: dpbusd(nibbles 0..15, x) - 8 · sum(x) per block;
//   Q8_0x8: dpbusd(w + 128 as unsigned, x) - 128 · sum(x) per block;
//   Q4_Kx8: dpbusd per sub-block of 32, times its 6-bit scale (vpmulld), mins by vpdpwssd;
//   Q6_Kx8 (kernels/q6_k_x8.h): dpbusd per group of 16 (its 6-bit weights masked out of three
//   chunks, the fourth chunk's put together from their top bits), times its int8 scale, the
//   offset of 32 by vpdpwssd of the scales with the activations' sums per 16.
// Two encodings of the same code (int8_tiles_vnni.inc, compiled once per target): AVX-VNNI (VEX,
// 16 registers: Alder Lake and later clients) and AVX512-VNNI with AVX512VL (EVEX on 256-bit
// registers, 32 of them: Ice Lake, Sapphire Rapids, Zen 4 servers). Callers check cpu_features.
#pragma once
#include <cstdint>
#include <optional>

#include "kernels/kquant_dot.h"
#include "kernels/quant_dot.h"

namespace lamina {

enum class VnniIsa { kAvxVnni, kAvx512Vnni };
// The encoding a VNNI QuantKernel runs; nullopt for scalar and avx2.
inline std::optional<VnniIsa> vnni_isa(QuantKernel k) {
  if (k == QuantKernel::kAvxVnni) return VnniIsa::kAvxVnni;
  if (k == QuantKernel::kAvx512Vnni) return VnniIsa::kAvx512Vnni;
  return std::nullopt;
}

// y[m, n] (+)= the product for activation rows [m0, m1) and weight rows [n0, n1) (multiples of 8)
// of the repacked tensor at w; y has row stride ldy.
void q4_0x8_dot_rows_vnni(VnniIsa isa, const Q8Activations& x, int64_t m0, int64_t m1,
                          const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                          bool accumulate);
void q8_0x8_dot_rows_vnni(VnniIsa isa, const Q8Activations& x, int64_t m0, int64_t m1,
                          const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                          bool accumulate);
void q4_k_x8_dot_rows_vnni(VnniIsa isa, const Q8KActivations& x, int64_t m0, int64_t m1,
                           const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                           bool accumulate);

void q6_k_x8_dot_rows_vnni(VnniIsa isa, const Q8KActivations& x, int64_t m0, int64_t m1,
                           const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                           bool accumulate);

}  // namespace lamina
