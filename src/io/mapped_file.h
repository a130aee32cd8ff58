// Read-only memory map of a whole file; shared so tensors can keep it alive.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lamina {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }  // kept open for copy_file_range
  // Drops the pages of [offset, offset+len) from this process's resident set (they stay in the
  // page cache): streaming copies touch each byte once, so RSS stays at one tensor, not the file.
  void release(size_t offset, size_t len) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
  std::string path_;
};

// Drops the whole pages inside [p, p + len) of a read-only file mapping from the resident set:
// the next read faults them back from the page cache (or the file). Only for memory-mapped file
// data: on anonymous memory MADV_DONTNEED would zero it.
void release_mapped_pages(const void* p, size_t len);
// Whether p lies inside a live MappedFile (file pages, safe to release), not heap memory.
bool is_in_mapped_file(const void* p);

// Whole file as a string (small text files: JSON configs, token lists).
std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);

}  // namespace lamina
