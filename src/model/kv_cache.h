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

}  // namespace lamina
