// What this x86-64 CPU can run, read at run time from cpuid (and xgetbv: whether the OS saves the
// wide registers), so kernels are chosen for the machine the binary runs on, not the one it was
// built on. Every benchmark figure is reported beside cpu_description().
#pragma once
#include <string>

namespace lamina {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;  // AVX2 integer and FMA float paths
  bool avx512f = false, avx512bw = false, avx512vl = false;
  bool avx512_vnni = false, avx_vnni = false;  // vpdpbusd (512-bit / VEX 256-bit)
  bool avx512_bf16 = false;                    // vdpbf16ps
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();
// "MODEL NAME; flags: avx2 fma f16c ..." (the flags above that are present).
std::string cpu_description();

}  // namespace lamina
