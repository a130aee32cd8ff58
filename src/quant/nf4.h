// QLoRA's 4-bit NormalFloat (Dettmers et al.) as bitsandbytes stores a frozen base: blocks of 64
// values scaled by their absolute maximum and rounded to the nearest of 16 NormalFloat levels, two
// per byte (element 2i in the high nibble); with double quantisation (bitsandbytes'
// compress_statistics, on here as in QLoRA) the per-block absmax values are stored as 8-bit codes
// of (absmax - mean) in blocks of 256 over bitsandbytes' signed dynamic map, with one F32 scale per
// 256 codes and the mean.
//
// Semantics are bitsandbytes 0.50.1's CPU path (the pure-torch quantize_4bit kernel, the native
// CPU 8-bit blockwise quantizer with its 65536-entry look-up table), reproduced from the numpy
// port in tests/reference/bnb_nf4_ref.py, which records each rule's source line. One difference:
// the mean is an F32 rounding of a double sum, where torch's CPU mean rounds a cascade of F32
// partial sums (machine-dependent in the last bit); every other byte follows from it exactly.
//
// One lamina NF4 tensor of n elements (n a multiple of 64, so every row of a [N, K] matrix with
// K % 64 == 0 is whole blocks) is one buffer:
//   [n/2 packed nibbles][n/64 absmax codes][pad to 4][ceil(n/64/256) F32 nested absmax][F32 mean]
#pragma once
#include <cstddef>
#include <cstdint>

namespace lamina {

constexpr int64_t kNf4Block = 64;         // values per absmax
constexpr int64_t kNf4NestedBlock = 256;  // absmax codes per nested scale

// Bytes of an NF4 tensor of n elements (n % 64 == 0).
size_t nf4_bytes(int64_t n);
// x[n] -> out[nf4_bytes(n)], the whole tensor at once (the mean is over all its blocks).
void quantize_nf4(const float* x, int64_t n, uint8_t* out);
// Elements [first, first + count) of an NF4 tensor of n elements into y (first and count
// multiples of 64): value = level[nibble] * (code8[absmax code] * nested scale + mean).
void dequantize_nf4(const uint8_t* t, int64_t n, int64_t first, int64_t count, float* y);

// The 16 NormalFloat levels and bitsandbytes' create_dynamic_map(signed=True) (256 values).
const float* nf4_levels();
const float* nf4_dynamic_map();

}  // namespace lamina
