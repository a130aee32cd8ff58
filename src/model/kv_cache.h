// Per-layer key/value cache for incremental decoding. Keys are stored after RoPE.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lamina {

// Each layer's keys and values are [nkv, capacity, hd]: one kv head's positions are contiguous, so
// attention streams them (the prefetchers follow; with rows of nkv * hd floats a head's slices lay
// 1 KB apart and fell into a quarter of the L1's sets).
struct KVCache {
  std::vector<Tensor> k, v;  // per layer: [nkv, capacity, hd] F32
  int64_t capacity = 0;
  int64_t len = 0;  // positions filled: the next token goes at position len

  KVCache() = default;
  KVCache(int64_t layers, int64_t capacity, int64_t nkv, int64_t hd);
  void clear() { len = 0; }
};

// The caches of several sequences in one store (continuous batching): slot s holds positions
// [0, slot_capacity) of its sequence in rows [s * slot_capacity, (s + 1) * slot_capacity).
struct SlotKVCache {
  KVCache store;  // capacity: slots * slot_capacity
  int64_t slot_capacity = 0;
  std::vector<int64_t> len;  // per slot: positions filled (the next token's position)
  int64_t slots() const { return int64_t(len.size()); }
};

}  // namespace lamina
