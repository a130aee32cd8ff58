// safetensors: memory-mapped, validated reading; streaming, sharded writing.
// Format: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// __metadata__}, then the data section; offsets are relative to it, contiguous, row-major
// little-endian.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/interrupt.h"
#include "core/tensor.h"
#include "io/mapped_file.h"

namespace lamina {

constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;  // as the reference implementation

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets within the data section
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N
};

// Parses and validates a whole file image: header length cap, JSON, known dtypes, dtype x shape =
// byte count, offsets inside the file and contiguous from 0, no duplicate names.
// `where` (the file name) starts every error message. Never reads outside [data, data+size).
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where);

// One .safetensors file, mapped.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* find(const std::string& name) const;
  // Zero-copy view of the tensor's bytes; keeps the map alive.
  Tensor tensor(const TensorInfo& info) const;
  const std::string& path() const { return map_->path(); }
  void release(const TensorInfo& info) const {
    map_->release(header_.data_start + info.begin, info.end - info.begin);
  }
  int fd() const { return map_->fd(); }
  const uint8_t* map_data() const { return map_->data(); }

 private:
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

// A model directory's weights: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& model_dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor get(const std::string& name) const;  // zero-copy
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }
  std::string file_of(const std::string& name) const;
  // Drops the tensor's pages from the resident set once it has been copied (see MappedFile).
  void release(const std::string& name) const;
  // The file holding a tensor (for copies that bypass user memory).
  const SafetensorsFile& file(const std::string& name) const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<size_t, const TensorInfo*>> where_;
};

// Streams tensors into one or more shards. The full plan (names, dtypes, shapes) is known up front
// so headers can be written before data; tensors are then supplied in plan order, one at a time.
// Shards: model.safetensors when one, else model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json. Every file is written under a temporary name and renamed by
// finish(), so an interrupted write leaves no file that looks complete.
class SafetensorsWriter {
 public:
  struct Planned {
    std::string name;
    DType dtype;
    Shape shape;
  };
  // basename names the files: BASENAME.safetensors, or BASENAME-0000i-of-0000N.safetensors and
  // BASENAME.safetensors.index.json.
  SafetensorsWriter(std::string dir, std::vector<Planned> plan, uint64_t max_shard_bytes,
                    std::map<std::string, std::string> metadata = {{"format", "pt"}},
                    std::string basename = "model");
  ~SafetensorsWriter();
  // Writes the next tensor of the plan; `bytes` must hold exactly its nbytes.
  void write(const std::string& name, const void* bytes, size_t nbytes);
  // Writes the next tensor as an unchanged byte copy of `info` in `src`, in the kernel
  // (copy_file_range) where possible: as fast as cp, and it never enters this process's memory.
  void copy_from(const std::string& name, const SafetensorsFile& src, const TensorInfo& info);
  void finish();
  size_t num_shards() const { return shards_.size(); }
  uint64_t total_bytes() const { return total_; }

 private:
  struct Shard {
    std::string file;
    size_t first, count;  // plan indices
  };
  void open_shard(size_t s);
  void begin_tensor(const std::string& name, size_t nbytes);
  std::string dir_, basename_;
  std::vector<Planned> plan_;
  std::map<std::string, std::string> metadata_;
  std::vector<Shard> shards_;
  size_t next_ = 0, cur_shard_ = 0;
  uint64_t total_ = 0;
  std::FILE* out_ = nullptr;
  bool finished_ = false;
  WritingOutput writing_;  // signals wait for the next tensor, then the shards are removed
};

// Parses "5GB", "500MB", "2GiB", "1000000" into bytes.
uint64_t parse_byte_size(const std::string& s, const std::string& what);

}  // namespace lamina
