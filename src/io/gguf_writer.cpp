#include "io/gguf_writer.h"

#include <unistd.h>

#include <cstring>
#include <set>

#include "core/error.h"

namespace lamina {

namespace {
constexpr uint64_t kAlign = 32;  // GGUF_DEFAULT_ALIGNMENT
// gguf_type ids of metadata values.
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

template <class T>
void append(std::vector<uint8_t>& b, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}
void append_str(std::vector<uint8_t>& b, const std::string& s) {
  append(b, uint64_t(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}
uint64_t pad(uint64_t x) {
  return (x + kAlign - 1) / kAlign * kAlign;
}
}  // namespace

GgufWriter::GgufWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp-" + std::to_string(getpid())) {}

GgufWriter::~GgufWriter() {
  if (f_) std::fclose(f_);
  if (!done_ && data_) std::remove(tmp_.c_str());
}

void GgufWriter::key(const std::string& k, uint32_t type) {
  if (data_) fail("gguf: metadata '", k, "' after the data started");
  append_str(meta_, k);
  append(meta_, type);
  ++n_kv_;
}
void GgufWriter::kv(const std::string& k, const std::string& v) {
  key(k, kString);
  append_str(meta_, v);
}
void GgufWriter::kv_u32(const std::string& k, uint32_t v) {
  key(k, kU32), append(meta_, v);
}
void GgufWriter::kv_i32(const std::string& k, int32_t v) {
  key(k, kI32), append(meta_, v);
}
void GgufWriter::kv_f32(const std::string& k, float v) {
  key(k, kF32), append(meta_, v);
}
void GgufWriter::kv_bool(const std::string& k, bool v) {
  key(k, kBool), append(meta_, uint8_t(v ? 1 : 0));
}
void GgufWriter::kv(const std::string& k, const std::vector<std::string>& v) {
  key(k, kArray), append(meta_, kString), append(meta_, uint64_t(v.size()));
  for (auto& s : v) append_str(meta_, s);
}
void GgufWriter::kv(const std::string& k, const std::vector<float>& v) {
  key(k, kArray), append(meta_, kF32), append(meta_, uint64_t(v.size()));
  for (float x : v) append(meta_, x);
}
void GgufWriter::kv(const std::string& k, const std::vector<int32_t>& v) {
  key(k, kArray), append(meta_, kI32), append(meta_, uint64_t(v.size()));
  for (int32_t x : v) append(meta_, x);
}

void GgufWriter::add_tensor(const std::string& name, const std::vector<int64_t>& ne,
                            GgmlType type) {
  if (data_) fail("gguf: tensor '", name, "' declared after the data started");
  if (ne.empty() || ne.size() > 4) fail("gguf: tensor '", name, "' must have 1 to 4 dimensions");
  for (auto& t : tensors_)
    if (t.name == name) fail("gguf: tensor '", name, "' declared twice");
  int64_t rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
  Info in{name, ne, type, 0, 0};
  in.bytes = ggml_row_bytes(type, ne[0]) * size_t(rows);
  tensors_.push_back(in);
}

void GgufWriter::put(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n) fail(tmp_, ": write failed (disk full?)");
}

void GgufWriter::begin_data() {
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail(tmp_, ": cannot create");
  data_ = true;
  std::vector<uint8_t> h;
  h.insert(h.end(), {'G', 'G', 'U', 'F'});
  append(h, uint32_t(3));
  append(h, uint64_t(tensors_.size()));
  append(h, n_kv_);
  h.insert(h.end(), meta_.begin(), meta_.end());
  uint64_t off = 0;
  for (auto& t : tensors_) {
    t.offset = off;
    off = pad(off + t.bytes);
    append_str(h, t.name);
    append(h, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) append(h, uint64_t(d));
    append(h, uint32_t(t.type));
    append(h, t.offset);
  }
  h.resize(size_t(pad(h.size())), 0);
  put(h.data(), h.size());
}

void GgufWriter::write(const void* bytes, size_t n) {
  if (!data_) fail("gguf: write before begin_data");
  throw_if_interrupted();
  const auto* p = static_cast<const uint8_t*>(bytes);
  static const uint8_t zeros[kAlign] = {};
  while (n > 0) {
    if (cur_ >= tensors_.size()) fail("gguf: more data than the declared tensors hold");
    const Info& t = tensors_[cur_];
    const size_t k = std::min(n, t.bytes - cur_written_);
    put(p, k);
    p += k, n -= k, cur_written_ += k;
    if (cur_written_ == t.bytes) {
      put(zeros, size_t(pad(t.bytes) - t.bytes));
      ++cur_, cur_written_ = 0;
    }
  }
}

void GgufWriter::finish() {
  if (cur_ != tensors_.size())
    fail("gguf: tensor '", tensors_[cur_].name, "' is missing ",
         tensors_[cur_].bytes - cur_written_, " bytes");
  throw_if_interrupted();
  if (std::fflush(f_) != 0 || fsync(fileno(f_)) != 0) fail(tmp_, ": write failed");
  std::fclose(f_);
  f_ = nullptr;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail(path_, ": cannot rename into place");
  done_ = true;
}

}  // namespace lamina
