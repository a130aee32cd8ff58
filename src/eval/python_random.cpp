#include "eval/python_random.h"

#include <cmath>
#include <unordered_set>

#include "core/error.h"

namespace lamina {

namespace {
constexpr int N = 624, M = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU, kUpper = 0x80000000U, kLower = 0x7fffffffU;
}  // namespace

PythonRandom::PythonRandom(uint64_t seed) {
  // init_genrand(19650218) then init_by_array over the seed's 32-bit words, least significant first
  // (one word for seeds below 2^32, as CPython's random_seed splits abs(seed)).
  mt_[0] = 19650218U;
  for (int i = 1; i < N; ++i)
    mt_[size_t(i)] = 1812433253U * (mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) + uint32_t(i);
  std::vector<uint32_t> key{uint32_t(seed)};
  if (seed >> 32) key.push_back(uint32_t(seed >> 32));
  const int len = int(key.size());
  int i = 1, j = 0;
  for (int k = std::max(N, len); k; --k) {
    mt_[size_t(i)] =
        (mt_[size_t(i)] ^ ((mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) * 1664525U)) +
        key[size_t(j)] + uint32_t(j);
    ++i, ++j;
    if (i >= N) mt_[0] = mt_[N - 1], i = 1;
    if (j >= len) j = 0;
  }
  for (int k = N - 1; k; --k) {
    mt_[size_t(i)] =
        (mt_[size_t(i)] ^ ((mt_[size_t(i - 1)] ^ (mt_[size_t(i - 1)] >> 30)) * 1566083941U)) -
        uint32_t(i);
    ++i;
    if (i >= N) mt_[0] = mt_[N - 1], i = 1;
  }
  mt_[0] = 0x80000000U;
  index_ = N;
}

uint32_t PythonRandom::next_u32() {
  if (index_ >= N) {
    for (int k = 0; k < N; ++k) {
      const uint32_t y = (mt_[size_t(k)] & kUpper) | (mt_[size_t((k + 1) % N)] & kLower);
      mt_[size_t(k)] = mt_[size_t((k + M) % N)] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
    }
    index_ = 0;
  }
  uint32_t y = mt_[size_t(index_++)];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= y >> 18;
  return y;
}

uint64_t PythonRandom::getrandbits(int k) {
  if (k < 0 || k > 64) fail("getrandbits(", k, "): 0..64 bits");
  if (k == 0) return 0;
  if (k <= 32) return next_u32() >> (32 - k);
  // Words fill from the least significant; the last one keeps its top bits, like CPython.
  const uint64_t lo = next_u32();
  const uint64_t hi = next_u32() >> (64 - k);
  return lo | (hi << 32);
}

uint64_t PythonRandom::randbelow(uint64_t n) {
  if (n == 0) fail("randbelow(0)");
  int k = 0;
  for (uint64_t x = n; x; x >>= 1) ++k;  // n.bit_length()
  uint64_t r = getrandbits(k);
  while (r >= n) r = getrandbits(k);
  return r;
}

std::vector<size_t> PythonRandom::sample(size_t n, size_t k) {
  if (k > n) fail("sample larger than population (", k, " of ", n, ")");
  std::vector<size_t> result(k);
  size_t setsize = 21;
  if (k > 5) setsize += size_t(std::pow(4.0, std::ceil(std::log(double(k * 3)) / std::log(4.0))));
  if (n <= setsize) {
    std::vector<size_t> pool(n);
    for (size_t i = 0; i < n; ++i) pool[i] = i;
    for (size_t i = 0; i < k; ++i) {
      const size_t j = size_t(randbelow(n - i));
      result[i] = pool[j];
      pool[j] = pool[n - i - 1];
    }
  } else {
    std::unordered_set<size_t> selected;
    for (size_t i = 0; i < k; ++i) {
      size_t j = size_t(randbelow(n));
      while (selected.count(j)) j = size_t(randbelow(n));
      selected.insert(j);
      result[i] = j;
    }
  }
  return result;
}

std::vector<size_t> PythonRandom::shuffle(size_t n) {
  std::vector<size_t> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = i;
  for (size_t i = n; i-- > 1;) std::swap(x[i], x[size_t(randbelow(i + 1))]);
  return x;
}

}  // namespace lamina
