#include "kernels/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace lamina {

namespace {

#if defined(__x86_64__)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm = (xcr0 & 0x6) == 0x6;            // SSE and AVX state saved by the OS
  const bool zmm = ymm && (xcr0 & 0xe0) == 0xe0;   // opmask and the upper ZMM state
  const bool tiles = (xcr0 & 0x60000) == 0x60000;  // AMX tile config and data
  f.fma = ymm && (c & (1u << 12));
  f.f16c = ymm && (c & (1u << 29));
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a;
  f.avx2 = ymm && (b & (1u << 5));
  f.avx512f = zmm && (b & (1u << 16));
  f.avx512bw = zmm && (b & (1u << 30));
  f.avx512vl = zmm && (b & (1u << 31));
  f.avx512_vnni = zmm && (c & (1u << 11));
  f.amx_bf16 = tiles && (d & (1u << 22));
  f.amx_tile = tiles && (d & (1u << 24));
  f.amx_int8 = tiles && (d & (1u << 25));
  if (max_subleaf < 1) return f;
  __cpuid_count(7, 1, a, b, c, d);
  f.avx_vnni = ymm && (a & (1u << 4));
  f.avx512_bf16 = zmm && (a & (1u << 5));
#endif
  return f;
}

std::string model_name() {
#if defined(__x86_64__)
  unsigned regs[12];
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i)
      __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2],
                  &regs[4 * i + 3]);
    char s[49];
    std::memcpy(s, regs, 48);
    s[48] = 0;
    std::string n(s);
    while (!n.empty() && (n.back() == ' ' || n.back() == 0)) n.pop_back();
    return n.substr(n.find_first_not_of(' ') == std::string::npos ? 0 : n.find_first_not_of(' '));
  }
#endif
  return "unknown CPU";
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::string cpu_description() {
  const CpuFeatures& f = cpu_features();
  std::string s = model_name() + "; flags:";
  const std::pair<bool, const char*> flags[] = {{f.avx2, "avx2"},
                                                {f.fma, "fma"},
                                                {f.f16c, "f16c"},
                                                {f.avx512f, "avx512f"},
                                                {f.avx512bw, "avx512bw"},
                                                {f.avx512vl, "avx512vl"},
                                                {f.avx512_vnni, "avx512_vnni"},
                                                {f.avx_vnni, "avx_vnni"},
                                                {f.avx512_bf16, "avx512_bf16"},
                                                {f.amx_tile, "amx_tile"},
                                                {f.amx_int8, "amx_int8"},
                                                {f.amx_bf16, "amx_bf16"}};
  for (auto& [on, name] : flags)
    if (on) s += std::string(" ") + name;
  return s;
}

}  // namespace lamina
