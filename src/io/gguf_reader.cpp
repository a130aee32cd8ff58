#include "io/gguf_reader.h"

#include <cstring>

#include "core/error.h"

namespace lamina {

namespace {

class Cursor {
 public:
  Cursor(const uint8_t* d, size_t n, const std::string& where) : d_(d), n_(n), where_(where) {}
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, d_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint64_t len = get<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(d_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }
  void need(uint64_t k, const char* what) const {
    if (k > n_ - pos_)
      fail(where_, ": truncated at byte ", pos_, " reading ", what, " (", k, " bytes needed, ",
           n_ - pos_, " left)");
  }
  size_t pos() const { return pos_; }

 private:
  const uint8_t* d_;
  size_t n_, pos_ = 0;
  const std::string& where_;
};

constexpr uint32_t kArray = 9;

nlohmann::json scalar(Cursor& c, uint32_t t, const std::string& where, const std::string& key) {
  switch (t) {
    case 0:
      return c.get<uint8_t>("u8");
    case 1:
      return c.get<int8_t>("i8");
    case 2:
      return c.get<uint16_t>("u16");
    case 3:
      return c.get<int16_t>("i16");
    case 4:
      return c.get<uint32_t>("u32");
    case 5:
      return c.get<int32_t>("i32");
    case 6:
      return c.get<float>("f32");
    case 7:
      return c.get<uint8_t>("bool") != 0;
    case 8:
      return c.str("string");
    case 10:
      return c.get<uint64_t>("u64");
    case 11:
      return c.get<int64_t>("i64");
    case 12:
      return c.get<double>("f64");
    default:
      fail(where, ": metadata '", key, "' has unknown value type ", t);
  }
}

}  // namespace

const char* ggml_type_name_or_id(uint32_t type, std::string& buf) {
  if (auto t = ggml_type_from_id(type)) return ggml_type_name(*t);
  buf = "ggml type " + std::to_string(type);
  return buf.c_str();
}

GgufFile parse_gguf(const uint8_t* data, size_t size, const std::string& where) {
  Cursor c(data, size, where);
  GgufFile g;
  c.need(4, "the magic");
  if (std::memcmp(data, "GGUF", 4) != 0) fail(where, ": not a GGUF file (no 'GGUF' magic)");
  c.get<uint32_t>("magic");
  g.version = c.get<uint32_t>("version");
  if (g.version < 2 || g.version > 3) fail(where, ": GGUF version ", g.version, " (2 or 3 known)");
  const uint64_t n_tensors = c.get<uint64_t>("tensor count"), n_kv = c.get<uint64_t>("kv count");
  // Every entry takes at least 12 bytes: counts beyond the file are corrupt, not allocations.
  if (n_tensors > size / 12 || n_kv > size / 12) fail(where, ": implausible tensor/kv counts");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.str("a metadata key");
    const uint32_t t = c.get<uint32_t>("a value type");
    if (t == kArray) {
      const uint32_t et = c.get<uint32_t>("an array type");
      const uint64_t n = c.get<uint64_t>("an array length");
      if (et == kArray) fail(where, ": metadata '", key, "' is an array of arrays");
      if (n > size) fail(where, ": metadata '", key, "' has an implausible length ", n);
      nlohmann::json arr = nlohmann::json::array();
      for (uint64_t k = 0; k < n; ++k) {
        nlohmann::json v = scalar(c, et, where, key);
        if (key == "tokenizer.ggml.tokens" && v.is_string())
          g.tokens.push_back(v.get<std::string>());
        if (k < 64) arr.push_back(std::move(v));
      }
      g.metadata[key] = std::move(arr);
      g.array_lengths[key] = n;
    } else {
      g.metadata[key] = scalar(c, t, where, key);
    }
  }
  if (auto a = g.metadata.find("general.alignment"); a != g.metadata.end()) {
    if (!a->is_number_unsigned() || a->get<uint64_t>() == 0 ||
        (a->get<uint64_t>() & (a->get<uint64_t>() - 1)) != 0)
      fail(where, ": general.alignment must be a power of two");
    g.alignment = a->get<uint64_t>();
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str("a tensor name");
    const uint32_t nd = c.get<uint32_t>("n_dims");
    if (nd == 0 || nd > 4) fail(where, ": tensor '", t.name, "' has ", nd, " dimensions");
    uint64_t numel = 1;
    for (uint32_t k = 0; k < nd; ++k) {
      const uint64_t d = c.get<uint64_t>("a dimension");
      if (d == 0 || d > (uint64_t(1) << 40) || numel > (uint64_t(1) << 48) / d)
        fail(where, ": tensor '", t.name, "' has an implausible shape");
      numel *= d;
      t.ne.push_back(int64_t(d));
    }
    t.type = c.get<uint32_t>("a tensor type");
    t.offset = c.get<uint64_t>("a tensor offset");
    if (auto known = ggml_type_from_id(t.type)) {
      const GgmlType gt = *known;
      if (t.ne[0] % ggml_block_elems(gt) != 0)
        fail(where, ": tensor '", t.name, "': rows of ", t.ne[0], " are not whole ",
             ggml_type_name(gt), " blocks");
      t.bytes = uint64_t(ggml_row_bytes(gt, t.ne[0])) * (numel / uint64_t(t.ne[0]));
    }
    g.tensors.push_back(std::move(t));
  }
  g.data_offset = (uint64_t(c.pos()) + g.alignment - 1) / g.alignment * g.alignment;
  if (!g.tensors.empty() && g.data_offset > size) fail(where, ": no data section");
  for (auto& t : g.tensors) {
    if (t.offset % g.alignment != 0) fail(where, ": tensor '", t.name, "' is not aligned");
    if (t.offset > size || t.bytes > size - g.data_offset ||
        g.data_offset + t.offset > size - t.bytes)
      fail(where, ": tensor '", t.name, "' data lies outside the file");
  }
  return g;
}

GgufFile read_gguf(const std::string& path) {
  auto m = MappedFile::open(path);
  return parse_gguf(m->data(), m->size(), path);
}

}  // namespace lamina
