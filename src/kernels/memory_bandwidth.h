// The memory read bandwidth this machine reaches with the kernels' threads: the ceiling of
// decoding, which streams every weight once per token (llama-bench users compare decode speed
// with it). Measured, not assumed: machines differ between sessions.
#pragma once
#include <cstdint>

namespace lamina {

// Bytes per second of a streaming read (OpenMP threads, each summing its own slice) over a
// buffer of `bytes` (default 1 GiB: well beyond the last-level cache), best of `rounds` (a shared
// machine's bandwidth moves between runs).
double measure_read_bandwidth(int64_t bytes = int64_t(1) << 30, int rounds = 5);

}  // namespace lamina
