#include "io/imatrix_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"

namespace lamina {

namespace {

constexpr const char* kSum2 = ".in_sum2";
constexpr const char* kCounts = ".counts";

int64_t matrices(const ImatrixEntry& e) {
  return int64_t(e.count.size());
}

void write_gguf_imatrix(const std::string& path, const ImatrixData& d) {
  GgufWriter w(path);
  w.kv("general.type", "imatrix");
  w.kv("imatrix.datasets", d.datasets);
  w.kv_u32("imatrix.chunk_count", uint32_t(d.chunk_count));
  w.kv_u32("imatrix.chunk_size", uint32_t(d.chunk_size));
  for (const auto& [name, e] : d.entries) {  // a std::map: sorted, as llama-imatrix orders them
    w.add_tensor(name + kSum2, {e.cols, matrices(e)}, GgmlType::F32);
    w.add_tensor(name + kCounts, {1, matrices(e)}, GgmlType::F32);
  }
  w.begin_data();
  for (const auto& [name, e] : d.entries) {
    std::vector<float> v(e.sum2.begin(), e.sum2.end());
    w.write(v.data(), v.size() * sizeof(float));
    v.assign(e.count.begin(), e.count.end());
    w.write(v.data(), v.size() * sizeof(float));
  }
  w.finish();
}

template <class T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// llama-imatrix's save_imatrix_legacy: values stored as mean * ncall, ncall the chunks the matrix
// saw (rounded up); an expert that saw nothing stores ncall (a mean of 1); entries that saw
// nothing at all are left out.
void write_legacy_imatrix(const std::string& path, const ImatrixData& d) {
  std::string b;
  std::vector<const std::pair<const std::string, ImatrixEntry>*> keep;
  for (const auto& kv : d.entries)
    if (std::any_of(kv.second.count.begin(), kv.second.count.end(), [](int64_t c) { return c; }))
      keep.push_back(&kv);
  put(b, int32_t(keep.size()));
  const int64_t chunk = std::max<int64_t>(d.chunk_size, 1);
  for (const auto* kv : keep) {
    const ImatrixEntry& e = kv->second;
    put(b, int32_t(kv->first.size()));
    b += kv->first;
    const int64_t most = *std::max_element(e.count.begin(), e.count.end());
    const int32_t ncall = int32_t((most + chunk - 1) / chunk);
    put(b, ncall);
    put(b, int32_t(e.sum2.size()));
    for (size_t i = 0; i < e.sum2.size(); ++i) {
      const int64_t c = e.count[i / size_t(e.cols)];
      const double mean = c ? e.sum2[i] / double(c) : 1.0;
      put(b, float(mean * ncall));
    }
  }
  put(b, int32_t(d.chunk_count));
  const std::string dataset = d.datasets.empty() ? "" : d.datasets.back();
  put(b, int32_t(dataset.size()));
  b += dataset;
  write_file_atomic(path, b);
}

void check_finite(const std::string& path, const std::string& name, const ImatrixEntry& e) {
  for (double v : e.sum2)
    if (!std::isfinite(v)) fail(path, ": ", name, " holds a non-finite value (", v, ")");
}

ImatrixData parse_gguf_imatrix(const uint8_t* data, size_t size, const std::string& path) {
  const GgufFile g = parse_gguf(data, size, path);
  const auto& m = g.metadata;
  if (!m.contains("imatrix.chunk_count") || !m.contains("imatrix.chunk_size") ||
      !m.contains("imatrix.datasets"))
    fail(path, ": not an imatrix file (no imatrix.chunk_count / chunk_size / datasets)");
  for (const char* k : {"imatrix.chunk_count", "imatrix.chunk_size"})
    if (!m[k].is_number_unsigned()) fail(path, ": ", k, " is not an unsigned integer");
  if (!m["imatrix.datasets"].is_array()) fail(path, ": imatrix.datasets is not an array");
  ImatrixData d;
  d.chunk_count = m["imatrix.chunk_count"].get<int64_t>();
  d.chunk_size = m["imatrix.chunk_size"].get<int64_t>();
  for (const auto& s : m["imatrix.datasets"])
    if (s.is_string()) d.datasets.push_back(s.get<std::string>());
  // Pair NAME.in_sum2 with NAME.counts; other tensors (a newer llama-imatrix's in_sum) are ignored.
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> pairs;
  auto strip = [](const std::string& s, const char* suffix, std::string& base) {
    const size_t n = std::strlen(suffix);
    if (s.size() <= n || s.compare(s.size() - n, n, suffix) != 0) return false;
    base = s.substr(0, s.size() - n);
    return true;
  };
  for (const GgufTensorInfo& t : g.tensors) {
    std::string base;
    if (strip(t.name, kSum2, base))
      pairs[base].first = &t;
    else if (strip(t.name, kCounts, base))
      pairs[base].second = &t;
  }
  for (const auto& [name, p] : pairs) {
    const auto [sums, counts] = p;
    if (!sums || !counts) fail(path, ": ", name, " has ", sums ? "no .counts" : "no .in_sum2");
    for (const GgufTensorInfo* t : {sums, counts})
      if (t->type != uint32_t(GgmlType::F32) || t->ne.size() > 2 || t->ne.empty())
        fail(path, ": ", t->name, " is not a 1-D or 2-D F32 tensor");
    const int64_t cols = sums->ne[0], nmat = sums->ne.size() > 1 ? sums->ne[1] : 1;
    const int64_t ncount = counts->ne[0] * (counts->ne.size() > 1 ? counts->ne[1] : 1);
    if (cols <= 0 || nmat <= 0 || ncount != nmat)
      fail(path, ": ", name, " has ", nmat, " matrices of sums but ", ncount, " counts");
    if (sums->bytes != uint64_t(cols * nmat) * sizeof(float) || counts->bytes != uint64_t(nmat) * 4)
      fail(path, ": ", name, ": tensor sizes do not match their shapes");
    const uint8_t* sp = data + g.data_offset + sums->offset;
    const uint8_t* cp = data + g.data_offset + counts->offset;
    auto f32 = [](const uint8_t* p, int64_t i) {
      float v;
      std::memcpy(&v, p + i * 4,
                  4);  // the data is 32-byte aligned in a file, not in a fuzzer's buffer
      return v;
    };
    ImatrixEntry e;
    e.cols = cols;
    e.sum2.resize(size_t(cols * nmat));
    for (int64_t i = 0; i < cols * nmat; ++i) e.sum2[size_t(i)] = f32(sp, i);
    for (int64_t j = 0; j < nmat; ++j) {
      const float c = f32(cp, j);
      if (!std::isfinite(c) || c < 0 || c > 9e18f)
        fail(path, ": ", name, ".counts[", j, "] is ", c, ", not a count");
      e.count.push_back(int64_t(c));
    }
    check_finite(path, name, e);
    d.entries[name] = std::move(e);
  }
  if (d.entries.empty()) fail(path, ": an imatrix file with no entries");
  return d;
}

// Bounds-checked reads of a legacy file.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* p, size_t n) : path_(path), p_(p), n_(n) {}
  bool done() const { return at_ == n_; }
  int32_t i32(const char* what) {
    int32_t v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
  const uint8_t* take(size_t n, const char* what) {
    if (n > n_ - at_) fail(path_, ": truncated at byte ", at_, " (reading ", what, ")");
    const uint8_t* r = p_ + at_;
    at_ += n;
    return r;
  }

 private:
  const std::string& path_;
  const uint8_t* p_;
  size_t n_, at_ = 0;
};

ImatrixData read_legacy_imatrix(const std::string& path, const uint8_t* p, size_t n) {
  Cursor in(path, p, n);
  const int32_t entries = in.i32("the entry count");
  if (entries < 1) fail(path, ": an imatrix file with ", entries, " entries");
  ImatrixData d;
  for (int32_t i = 0; i < entries; ++i) {
    const int32_t len = in.i32("a name length");
    if (len <= 0 || len > 4096) fail(path, ": entry ", i, " has a name of ", len, " bytes");
    const std::string name(reinterpret_cast<const char*>(in.take(size_t(len), "a name")),
                           size_t(len));
    const int32_t ncall = in.i32("ncall"), nval = in.i32("the value count");
    if (ncall < 0 || nval < 1) fail(path, ": ", name, ": ncall ", ncall, ", ", nval, " values");
    const uint8_t* v = in.take(size_t(nval) * sizeof(float), "values");
    ImatrixEntry e;
    e.cols = nval;  // the legacy format does not say how many experts share the values
    e.sum2.resize(size_t(nval));
    for (int32_t j = 0; j < nval; ++j) {
      float f;
      std::memcpy(&f, v + size_t(j) * sizeof f, sizeof f);
      e.sum2[size_t(j)] = f;
    }
    e.count = {ncall};  // values are mean * ncall: importance_rows divides by it
    check_finite(path, name, e);
    if (!d.entries.emplace(name, std::move(e)).second)
      fail(path, ": entry ", name, " appears twice");
  }
  if (!in.done()) {  // newer legacy files end with the chunk count and the dataset's name
    d.chunk_count = in.i32("the chunk count");
    const int32_t len = in.i32("the dataset name length");
    if (len < 0) fail(path, ": dataset name of ", len, " bytes");
    d.datasets.emplace_back(reinterpret_cast<const char*>(in.take(size_t(len), "the dataset")),
                            size_t(len));
  }
  return d;
}

}  // namespace

ImportanceMatrix importance_rows(const ImatrixData& d) {
  ImportanceMatrix out;
  for (const auto& [name, e] : d.entries) {
    std::vector<float>& v = out[name];
    v.resize(e.sum2.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t c = e.count.size() == 1 ? e.count[0] : e.count[i / size_t(e.cols)];
      v[i] = c > 0 ? float(e.sum2[i] / double(c)) : 1.0f;
    }
  }
  return out;
}

void write_imatrix(const std::string& path, const ImatrixData& d, bool legacy) {
  for (const auto& [name, e] : d.entries)
    if (e.cols <= 0 || e.count.empty() || e.sum2.size() != size_t(e.cols) * e.count.size())
      fail("imatrix: entry ", name, " has ", e.sum2.size(), " sums for ", e.count.size(),
           " matrices of ", e.cols, " columns");
  legacy ? write_legacy_imatrix(path, d) : write_gguf_imatrix(path, d);
}

ImatrixData parse_imatrix(const uint8_t* data, size_t size, const std::string& where) {
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) return parse_gguf_imatrix(data, size, where);
  return read_legacy_imatrix(where, data, size);
}

ImatrixData read_imatrix(const std::string& path) {
  const auto map = MappedFile::open(path);
  return parse_imatrix(map->data(), map->size(), path);
}

}  // namespace lamina
