// Python's `random.Random`, bit for bit, as far as lm-evaluation-harness uses it to choose few-shot
// examples: MT19937 seeded from an integer through init_by_array (CPython's random_seed), and
// getrandbits / _randbelow / sample exactly as CPython 3.11's Lib/random.py and _randommodule.c
// compute them. std::mt19937 seeds differently (seed_seq), so the generator is written out here.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lamina {

class PythonRandom {
 public:
  explicit PythonRandom(uint64_t seed);  // random.Random(seed) for seed >= 0
  uint32_t next_u32();                   // genrand_uint32
  uint64_t getrandbits(int k);           // 0 <= k <= 64
  uint64_t randbelow(uint64_t n);        // _randbelow_with_getrandbits, n >= 1
  // random.sample(range(n), k): the indices, in the order Python returns them.
  std::vector<size_t> sample(size_t n, size_t k);
  // random.shuffle(x) for x = list(range(n)): the permutation Python leaves.
  std::vector<size_t> shuffle(size_t n);

 private:
  std::array<uint32_t, 624> mt_{};
  int index_ = 624;
};

}  // namespace lamina
