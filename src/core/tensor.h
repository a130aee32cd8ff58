// Tensor: a typed, shaped view of memory that it may or may not own.
// Weights are usually views into a memory-mapped safetensors file (owner keeps the map alive);
// activations own an aligned heap buffer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lamina {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // storage lifetime (heap buffer, mmap, or parent tensor's)

  static Tensor empty(DType t, Shape s);  // 64-byte aligned, uninitialised
  static Tensor zeros(DType t, Shape s);
  // A non-owning view of external memory; the caller keeps it alive (or passes owner).
  static Tensor view_of(void* data, DType t, Shape s, std::shared_ptr<void> owner = nullptr);

  bool defined() const { return data != nullptr; }
  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return dtype_bytes(dtype, numel()); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  float* f32();  // throws unless dtype is F32
  const float* f32() const;
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // Rows [begin, end) of the outermost dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // The index-th sub-tensor along dimension 0 (e.g. expert e of [E, N, K]).
  Tensor select0(int64_t index) const;
  // A copy converted to dtype t (F32 input to F32 still copies).
  Tensor to(DType t) const;
};

}  // namespace lamina
