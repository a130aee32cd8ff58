#include "kernels/int8_tiles_vnni.h"

#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#include "core/error.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels/stream_prefetch.h"

// GCC 12's AVX-512 intrinsics self-initialise their undefined operands (`__m512i __Y = __Y;`),
// which -Wmaybe-uninitialized reports at every use when they are enabled by a target pragma in a
// generic (-DLAMINA_NATIVE=OFF) build.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// AVX-VNNI: the VEX encoding, 16 registers.
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define LAMINA_VNNI_NS avxvnni
#define LAMINA_DPBUSD _mm256_dpbusd_avx_epi32
#define LAMINA_DPWSSD _mm256_dpwssd_avx_epi32
#include "kernels/int8_tiles_vnni.inc"
#undef LAMINA_VNNI_NS
#undef LAMINA_DPBUSD
#undef LAMINA_DPWSSD
#pragma GCC pop_options

// AVX512-VNNI: the EVEX encoding, 32 registers, 16 rows per 512-bit register (8 on 256-bit
// ones for a group left over).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#define LAMINA_VNNI_ZMM
#define LAMINA_VNNI_NS avx512vnni
#define LAMINA_DPBUSD _mm256_dpbusd_epi32
#define LAMINA_DPWSSD _mm256_dpwssd_epi32
#include "kernels/int8_tiles_vnni.inc"
#undef LAMINA_VNNI_NS
#undef LAMINA_DPBUSD
#undef LAMINA_DPWSSD
#undef LAMINA_VNNI_ZMM
#pragma GCC pop_options

#endif

namespace lamina {

#if defined(__x86_64__)

namespace {

// This encoding's copy of the rows function.
template <class Fn, class... A>
void by_isa(VnniIsa isa, Fn* avx, Fn* avx512, A&&... a) {
  (isa == VnniIsa::kAvxVnni ? avx : avx512)(std::forward<A>(a)...);
}

}  // namespace

void q4_0x8_dot_rows_vnni(VnniIsa isa, const Q8Activations& x, int64_t m0, int64_t m1,
                          const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                          bool accumulate) {
  by_isa(isa, avxvnni::q4_0x8_rows, avx512vnni::q4_0x8_rows, x, m0, m1, w, n0, n1, y, ldy,
         accumulate);
}

void q8_0x8_dot_rows_vnni(VnniIsa isa, const Q8Activations& x, int64_t m0, int64_t m1,
                          const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                          bool accumulate) {
  by_isa(isa, avxvnni::q8_0x8_rows, avx512vnni::q8_0x8_rows, x, m0, m1, w, n0, n1, y, ldy,
         accumulate);
}

void q4_k_x8_dot_rows_vnni(VnniIsa isa, const Q8KActivations& x, int64_t m0, int64_t m1,
                           const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                           bool accumulate) {
  // The activations' sums per sub-block of 32 (the mins multiply them), for these rows.
  thread_local std::vector<int16_t> s32;
  s32.resize(size_t((m1 - m0) * (x.K / 32)));
  by_isa(isa, avxvnni::q4_k_x8_rows, avx512vnni::q4_k_x8_rows, x, m0, m1, w, n0, n1, y, ldy,
         accumulate, s32.data());
}

void q6_k_x8_dot_rows_vnni(VnniIsa isa, const Q8KActivations& x, int64_t m0, int64_t m1,
                           const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t ldy,
                           bool accumulate) {
  by_isa(isa, avxvnni::q6_k_x8_rows, avx512vnni::q6_k_x8_rows, x, m0, m1, w, n0, n1, y, ldy,
         accumulate);
}

#else

void q4_0x8_dot_rows_vnni(VnniIsa, const Q8Activations&, int64_t, int64_t, const uint8_t*, int64_t,
                          int64_t, float*, int64_t, bool) {
  fail("q4_0x8_dot_rows_vnni: not an x86-64 build");
}
void q8_0x8_dot_rows_vnni(VnniIsa, const Q8Activations&, int64_t, int64_t, const uint8_t*, int64_t,
                          int64_t, float*, int64_t, bool) {
  fail("q8_0x8_dot_rows_vnni: not an x86-64 build");
}
void q4_k_x8_dot_rows_vnni(VnniIsa, const Q8KActivations&, int64_t, int64_t, const uint8_t*,
                           int64_t, int64_t, float*, int64_t, bool) {
  fail("q4_k_x8_dot_rows_vnni: not an x86-64 build");
}
void q6_k_x8_dot_rows_vnni(VnniIsa, const Q8KActivations&, int64_t, int64_t, const uint8_t*,
                           int64_t, int64_t, float*, int64_t, bool) {
  fail("q6_k_x8_dot_rows_vnni: not an x86-64 build");
}

#endif

}  // namespace lamina
