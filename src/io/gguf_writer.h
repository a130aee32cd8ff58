// GGUF (version 3) writer, llama.cpp's model file format:
//   "GGUF", u32 version, u64 tensor count, u64 metadata count,
//   metadata: (string key, u32 value type, value)*, strings as u64 length + bytes,
//   tensor infos: (string name, u32 n_dims, u64 ne[n_dims] (ne0 = the contiguous dimension),
//                  u32 ggml type, u64 offset within the data section)*,
//   padding to the alignment (32), the data section: each tensor aligned to 32.
// All little-endian. Tensors are streamed in declaration order, slab by slab, so a model is
// never held whole; the file is written to PATH.tmp-PID and renamed by finish().
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/interrupt.h"
#include "quant/ggml_blocks.h"

namespace lamina {

class GgufWriter {
 public:
  explicit GgufWriter(std::string path);
  ~GgufWriter();  // removes the temporary file unless finish() ran
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Metadata, before begin_data().
  void kv(const std::string& key, const std::string& v);
  void kv(const std::string& key, const char* v) { kv(key, std::string(v)); }
  void kv_u32(const std::string& key, uint32_t v);
  void kv_i32(const std::string& key, int32_t v);
  void kv_f32(const std::string& key, float v);
  void kv_bool(const std::string& key, bool v);
  void kv(const std::string& key, const std::vector<std::string>& v);
  void kv(const std::string& key, const std::vector<float>& v);
  void kv(const std::string& key, const std::vector<int32_t>& v);

  // Declares a tensor; ne = dims with ne[0] contiguous (HF [out, in] -> {in, out}).
  void add_tensor(const std::string& name, const std::vector<int64_t>& ne, GgmlType type);
  // Writes the header, metadata and tensor infos; then the data of the declared tensors, in order,
  // through write(); each tensor's bytes may come in several slabs.
  void begin_data();
  void write(const void* bytes, size_t n);
  void finish();  // checks every byte was written, closes, renames into place

  size_t tensor_bytes(size_t i) const { return tensors_[i].bytes; }

 private:
  struct Info {
    std::string name;
    std::vector<int64_t> ne;
    GgmlType type;
    size_t bytes = 0;
    uint64_t offset = 0;
  };
  void put(const void* p, size_t n);
  void key(const std::string& k, uint32_t type);
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  std::vector<uint8_t> meta_;  // serialised metadata
  uint64_t n_kv_ = 0;
  std::vector<Info> tensors_;
  size_t cur_ = 0, cur_written_ = 0;
  bool data_ = false, done_ = false;
  WritingOutput writing_;  // a signal removes the temporary file (core/interrupt.h)
};

}  // namespace lamina
