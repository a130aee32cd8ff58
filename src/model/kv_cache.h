// Per-layer key/value cache for incremental decoding. Keys are stored after RoPE.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace lamina {

struct KVCache {
  std::vector<Tensor> k, v;  // per layer: [capacity, nkv*hd] F32
  int64_t capacity = 0;
  int64_t len = 0;  // positions filled: the next token goes at position len

  KVCache() = default;
  KVCache(int64_t layers, int64_t capacity, int64_t kv_dim);
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
