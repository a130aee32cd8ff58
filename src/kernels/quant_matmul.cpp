#include "kernels/quant_matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
// GCC 12 reports its own intrinsics' internal "undefined" vectors as maybe-uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include "core/error.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "quant/ggml_blocks.h"

namespace lamina {

namespace {

constexpr int64_t kQK = 32;

inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

inline float round_bf16(float v) {
  return bf16_to_f32(f32_to_bf16(v));
}

#if defined(__AVX512F__)
// f32 -> the f32 value of its bf16 rounding (nearest even), 16 lanes; weights are finite.
inline __m512 round_bf16(__m512 v) {
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(int(0xffff0000u))));
}

// Block b of a Q8_0/Q4_0 row -> its 32 weights d * q (resp. d * (q - 8)) in F32.
template <DType Q>
inline void expand_block_f32(const uint8_t* w, __m512& w0, __m512& w1) {
  const __m512 d = _mm512_set1_ps(half_to_float(w));
  if constexpr (Q == DType::Q8_0) {
    w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(w + 2))));
    w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(w + 18))));
  } else {
    const __m128i raw = _mm_loadu_si128((const __m128i*)(w + 2)), m = _mm_set1_epi8(0x0f);
    const __m512 eight = _mm512_set1_ps(8.f);
    w0 = _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, m))), eight);
    w1 = _mm512_sub_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), m))), eight);
  }
  w0 = _mm512_mul_ps(d, w0);
  w1 = _mm512_mul_ps(d, w1);
}
// ... rounded to bf16 (as F32 values).
template <DType Q>
inline void expand_block(const uint8_t* w, __m512& w0, __m512& w1) {
  expand_block_f32<Q>(w, w0, w1);
  w0 = round_bf16(w0);
  w1 = round_bf16(w1);
}
#endif

constexpr size_t block_bytes(DType q) {
  return q == DType::Q8_0 ? 34 : 18;
}

// Scalar fallback: the block's weights, rounded to bf16.
template <DType Q>
void expand_block_scalar(const uint8_t* w, float* y) {
  dequantize_row(Q == DType::Q8_0 ? GgmlType::Q8_0 : GgmlType::Q4_0, w, kQK, y);
  for (int64_t j = 0; j < kQK; ++j) y[j] = round_bf16(y[j]);
}

constexpr bool is_kquant(DType q) {
  return q == DType::Q4_K || q == DType::Q5_K || q == DType::Q6_K;
}

// The k-quants (256-element super-blocks, read from GGUF files): the row expanded with
// dequantize_row, then rounded to bf16 — the same values the fast types produce in registers.
inline const float* expand_row_generic(DType q, const uint8_t* w, int64_t K) {
  thread_local std::vector<float> row;
  row.resize(size_t(K));
  convert_to_f32(w, q, row.data(), size_t(K));
  for (auto& v : row) v = round_bf16(v);
  return row.data();
}

// Dot product of one quantized row (nb blocks) with x [nb * 32] (already bf16-rounded; xb: the
// same as bf16).
template <DType Q>
float dot_row(const uint8_t* w, const float* x, const uint16_t* xb, int64_t nb) {
  if constexpr (is_kquant(Q)) {
    (void)xb;
    const float* r = expand_row_generic(Q, w, nb * kQK);
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < nb * kQK; ++k) acc += r[k] * x[k];
    return acc;
  }
#if defined(__AVX512BF16__)
  // vcvtne2ps2bf16 rounds the block to bf16, vdpbf16ps multiplies pairs and accumulates in F32.
  (void)x;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, w += block_bytes(Q), xb += kQK) {
    __m512 w0, w1;
    expand_block_f32<Q>(w, w0, w1);
    acc = _mm512_dpbf16_ps(acc, _mm512_cvtne2ps_pbh(w1, w0),
                           (__m512bh)_mm512_loadu_si512((const void*)xb));
  }
  return _mm512_reduce_add_ps(acc);
#elif defined(__AVX512F__)
  (void)xb;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, w += block_bytes(Q), x += kQK) {
    __m512 w0, w1;
    expand_block<Q>(w, w0, w1);
    acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc0);
    acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  (void)xb;
  float acc = 0.f, y[kQK];
  for (int64_t b = 0; b < nb; ++b, w += block_bytes(Q), x += kQK) {
    expand_block_scalar<Q>(w, y);
    for (int64_t j = 0; j < kQK; ++j) acc += y[j] * x[j];
  }
  return acc;
#endif
}

// One quantized row (nb blocks) -> bf16 weights (the same values dot_row multiplies).
template <DType Q>
void expand_row_bf16(const uint8_t* w, uint16_t* y, int64_t nb) {
  if constexpr (is_kquant(Q)) {
    const float* r = expand_row_generic(Q, w, nb * kQK);
    for (int64_t k = 0; k < nb * kQK; ++k) y[k] = f32_to_bf16(r[k]);
    return;
  }
  for (int64_t b = 0; b < nb; ++b, w += block_bytes(Q), y += kQK) {
#if defined(__AVX512BF16__)
    __m512 w0, w1;
    expand_block_f32<Q>(w, w0, w1);
    _mm512_storeu_si512((void*)y, (__m512i)_mm512_cvtne2ps_pbh(w1, w0));
#elif defined(__AVX512F__)
    __m512 w0, w1;
    expand_block<Q>(w, w0, w1);
    _mm256_storeu_si256((__m256i*)y,
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(w0), 16)));
    _mm256_storeu_si256((__m256i*)(y + 16),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(w1), 16)));
#else
    float f[kQK];
    expand_block_scalar<Q>(w, f);
    for (int64_t j = 0; j < kQK; ++j) y[j] = f32_to_bf16(f[j]);
#endif
  }
}

template <DType Q>
void gemv_rows(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  const int64_t N = w.shape[0], K = w.shape[1], nb = K / kQK;
  const size_t rb = dtype_bytes(Q, K);
  const auto* base = static_cast<const uint8_t*>(w.data);
  thread_local std::vector<float> xr;
  thread_local std::vector<uint16_t> xh;
  xr.resize(size_t(M * K)), xh.resize(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i)
    xh[size_t(i)] = f32_to_bf16(x[i]), xr[size_t(i)] = bf16_to_f32(xh[size_t(i)]);
  const float* xp = xr.data();
  const uint16_t* xq = xh.data();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const float v = dot_row<Q>(base + size_t(n) * rb, xp + m * K, xq + m * K, nb);
      y[m * N + n] = accumulate ? y[m * N + n] + v : v;
    }
}

template <DType Q>
void gemm_slabs(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  const int64_t N = w.shape[0], K = w.shape[1];
  const size_t rb = dtype_bytes(Q, K);
  // A slab of ~2 MB of bf16 weights at a time (stays in cache between expansion and product).
  const int64_t slab = std::max<int64_t>(32, std::min<int64_t>(N, (int64_t(1) << 20) / K));
  thread_local std::vector<uint16_t> xb, wb;
  xb.resize(size_t(M * K));
  wb.resize(size_t(slab * K));
  to_bf16_parallel(x, xb.data(), M * K);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t n0 = 0; n0 < N; n0 += slab) {
    const int64_t nc = std::min(slab, N - n0);
    uint16_t* bp = wb.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nc; ++r)
      expand_row_bf16<Q>(base + size_t(n0 + r) * rb, bp + r * K, K / kQK);
    gemm_bf16(false, true, M, nc, K, xb.data(), K, bp, K, y + n0, N, accumulate);
  }
}

}  // namespace

void linear_quantized(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  LAMINA_CHECK(w.shape.size() == 2 && dtype_is_quantized(w.dtype),
               "linear_quantized: expected a 2-D block-type weight, got ", dtype_name(w.dtype), " ",
               shape_str(w.shape));
  if (M == 0) return;
  // Decoding (<= 4 rows): every weight row read once, expanded in registers; prompts: slabs
  // expanded to bf16 and multiplied by oneDNN.
  auto run = [&]<DType Q>() {
    M <= 4 ? gemv_rows<Q>(x, M, w, y, accumulate) : gemm_slabs<Q>(x, M, w, y, accumulate);
  };
  switch (w.dtype) {
    case DType::Q8_0:
      return run.template operator()<DType::Q8_0>();
    case DType::Q4_0:
      return run.template operator()<DType::Q4_0>();
    case DType::Q4_K:
      return run.template operator()<DType::Q4_K>();
    case DType::Q5_K:
      return run.template operator()<DType::Q5_K>();
    case DType::Q6_K:
      return run.template operator()<DType::Q6_K>();
    default:
      fail("linear_quantized: ", dtype_name(w.dtype), " is not a block type");
  }
}

}  // namespace lamina
