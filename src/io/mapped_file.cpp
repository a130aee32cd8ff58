#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace lamina {

namespace {
// Live mappings (begin -> size), so that memory can be told apart from heap memory.
std::mutex g_maps_mu;
std::map<uintptr_t, size_t>& live_maps() {
  static std::map<uintptr_t, size_t> m;
  return m;
}
}  // namespace

bool is_in_mapped_file(const void* p) {
  const uintptr_t a = uintptr_t(p);
  std::lock_guard<std::mutex> lk(g_maps_mu);
  auto& m = live_maps();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  return a < it->first + it->second;
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = size_t(st.st_size);
  if (m->size_ > 0) {
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(path, ": mmap failed: ", std::strerror(errno));
    }
    m->data_ = static_cast<const uint8_t*>(p);
    std::lock_guard<std::mutex> lk(g_maps_mu);
    live_maps()[uintptr_t(p)] = m->size_;
  }
  m->fd_ = fd;
  return m;
}

void MappedFile::release(size_t offset, size_t len) const {
  if (!data_ || len == 0) return;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_t begin = offset / page * page, end = std::min(size_, offset + len);
  if (end > begin) madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

void release_mapped_pages(const void* p, size_t len) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE)), a = uintptr_t(p);
  const uintptr_t begin = (a + page - 1) / page * page, end = (a + len) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) {
    {
      std::lock_guard<std::mutex> lk(g_maps_mu);
      live_maps().erase(uintptr_t(data_));
    }
    munmap(const_cast<uint8_t*>(data_), size_);
  }
  if (fd_ >= 0) ::close(fd_);
}

std::string read_text_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    fail(path, ": is a directory, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open: ", std::strerror(errno));
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

}  // namespace lamina
