#include "io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace lamina {
using json = nlohmann::json;

namespace {

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

TensorInfo parse_entry(const std::string& where, const std::string& name, const json& e) {
  auto bad = [&](const char* what) { fail(where, ": tensor '", name, "': ", what); };
  if (!e.is_object()) bad("entry is not an object");
  TensorInfo t;
  t.name = name;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) bad("missing string field 'dtype'");
  auto d = dtype_from_safetensors(dt->get<std::string>());
  if (!d)
    fail(where, ": tensor '", name, "': unsupported dtype ", dt->get<std::string>(),
         " (F32, F16 and BF16 are supported)");
  t.dtype = *d;
  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) bad("missing array field 'shape'");
  unsigned __int128 numel = 1;
  for (auto& v : *sh) {
    if (!v.is_number_unsigned()) bad("shape holds a value that is not a non-negative integer");
    uint64_t dim = v.get<uint64_t>();
    numel *= dim;
    if (numel > (unsigned __int128)(1ull << 62)) bad("shape is too large");
    t.shape.push_back(int64_t(dim));
  }
  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    bad("'data_offsets' must be two non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin) bad("data_offsets end before they begin");
  if ((unsigned __int128)(t.end - t.begin) != numel * dtype_size(t.dtype))
    fail(where, ": tensor '", name, "': ", dtype_name(t.dtype), " x ", shape_str(t.shape),
         " needs ", uint64_t(numel * dtype_size(t.dtype)), " bytes but data_offsets span ",
         t.end - t.begin);
  return t;
}

}  // namespace

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 8) fail(where, ": truncated safetensors file (", size, " bytes, no header length)");
  uint64_t n = read_u64_le(data);
  if (n > kMaxSafetensorsHeader)
    fail(where, ": safetensors header length ", n, " exceeds the 100 MB limit");
  if (n > size - 8)
    fail(where, ": truncated safetensors file (header of ", n, " bytes, file of ", size, ")");
  const char* text = reinterpret_cast<const char*>(data + 8);
  // Duplicate top-level names would silently overwrite each other in a JSON object: catch them.
  std::set<std::string> keys;
  std::string dup;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1) {
      auto k = parsed.get<std::string>();
      if (!keys.insert(k).second && dup.empty()) dup = k;
    }
    return true;
  };
  json h;
  try {
    h = json::parse(text, text + n, cb);
  } catch (const json::exception& e) {
    fail(where, ": malformed safetensors header JSON: ", e.what());
  }
  if (!dup.empty()) fail(where, ": duplicate tensor name '", dup, "' in header");
  if (!h.is_object()) fail(where, ": safetensors header is not a JSON object");
  SafetensorsHeader out;
  out.data_start = 8 + n;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(where, ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(where, ": __metadata__ value '", m.key(), "' is not a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    out.tensors.push_back(parse_entry(where, it.key(), *it));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (auto& t : out.tensors) {
    if (t.begin != pos)
      fail(where, ": tensor '", t.name, "' data_offsets [", t.begin, ", ", t.end,
           ") are not contiguous (expected start ", pos, ")");
    pos = t.end;
  }
  uint64_t data_len = size - out.data_start;
  if (pos != data_len)
    fail(where, ": data section is ", data_len, " bytes but the tensors cover ", pos,
         pos > data_len ? " (file truncated?)" : " (trailing bytes)");
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(MappedFile::open(path)) {
  header_ = parse_safetensors(map_->data(), map_->size(), path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Tensor SafetensorsFile::tensor(const TensorInfo& info) const {
  auto* p = const_cast<uint8_t*>(map_->data() + header_.data_start + info.begin);
  return Tensor::view_of(p, info.dtype, info.shape, map_);
}

Checkpoint::Checkpoint(const std::string& model_dir) : dir_(model_dir) {
  std::string single = model_dir + "/model.safetensors";
  std::string index = model_dir + "/model.safetensors.index.json";
  std::vector<std::string> files;
  std::unordered_map<std::string, std::string> expected;  // name -> shard from the index
  if (file_exists(index)) {
    json j;
    try {
      j = json::parse(read_text_file(index));
    } catch (const json::exception& e) {
      fail(index, ": malformed JSON: ", e.what());
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, ": missing object field 'weight_map'");
    std::set<std::string> uniq;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index, ": weight_map['", it.key(), "'] is not a string");
      auto f = it->get<std::string>();
      if (f.find('/') != std::string::npos)
        fail(index, ": weight_map['", it.key(), "'] names a path outside the model directory");
      expected[it.key()] = f;
      if (uniq.insert(f).second) files.push_back(f);
    }
  } else if (file_exists(single)) {
    files.push_back("model.safetensors");
  } else {
    fail(model_dir, ": no model.safetensors or model.safetensors.index.json");
  }
  for (auto& f : files) {
    files_.push_back(std::make_unique<SafetensorsFile>(model_dir + "/" + f));
    size_t fi = files_.size() - 1;
    for (auto& t : files_.back()->header().tensors) {
      if (where_.count(t.name))
        fail(model_dir + "/" + f, ": tensor '", t.name, "' also appears in another shard");
      where_[t.name] = {fi, &t};
    }
  }
  for (auto& [name, f] : expected) {
    auto it = where_.find(name);
    if (it == where_.end() || files_[it->second.first]->path() != model_dir + "/" + f)
      fail(index, ": tensor '", name, "' is listed in ", f, " but not found there");
  }
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, ": missing tensor '", name, "'");
  return *it->second.second;
}

Tensor Checkpoint::get(const std::string& name) const {
  auto& i = info(name);
  return files_[where_.at(name).first]->tensor(i);
}

std::string Checkpoint::file_of(const std::string& name) const {
  info(name);
  return files_[where_.at(name).first]->path();
}

const SafetensorsFile& Checkpoint::file(const std::string& name) const {
  info(name);
  return *files_[where_.at(name).first];
}

void Checkpoint::release(const std::string& name) const {
  auto& w = where_.at(name);
  files_[w.first]->release(*w.second);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> n;
  for (auto& f : files_)
    for (auto& t : f->header().tensors) n.push_back(t.name);
  return n;
}

// ---- writer ----

SafetensorsWriter::SafetensorsWriter(std::string dir, std::vector<Planned> plan,
                                     uint64_t max_shard_bytes,
                                     std::map<std::string, std::string> metadata,
                                     std::string basename)
    : dir_(std::move(dir)),
      basename_(std::move(basename)),
      plan_(std::move(plan)),
      metadata_(std::move(metadata)) {
  std::set<std::string> seen;
  for (auto& p : plan_)
    if (!seen.insert(p.name).second)
      fail("safetensors writer: duplicate tensor name '", p.name, "'");
  // Greedy sharding in plan order, as transformers' save_pretrained: a tensor larger than the
  // limit gets a shard of its own.
  size_t first = 0;
  uint64_t cur = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    uint64_t b = uint64_t(shape_numel(plan_[i].shape)) * dtype_size(plan_[i].dtype);
    if (i > first && max_shard_bytes && cur + b > max_shard_bytes) {
      shards_.push_back({"", first, i - first});
      first = i;
      cur = 0;
    }
    cur += b;
    total_ += b;
  }
  shards_.push_back({"", first, plan_.size() - first});
  char buf[64];
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (shards_.size() == 1) {
      shards_[s].file = basename_ + ".safetensors";
    } else {
      std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", s + 1, shards_.size());
      shards_[s].file = basename_ + buf;
    }
  }
  if (!plan_.empty()) open_shard(0);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_) std::fclose(out_);
  if (!finished_)
    for (auto& s : shards_) std::remove((dir_ + "/" + s.file + ".tmp").c_str());
}

void SafetensorsWriter::open_shard(size_t s) {
  cur_shard_ = s;
  auto& sh = shards_[s];
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  uint64_t off = 0;
  for (size_t i = sh.first; i < sh.first + sh.count; ++i) {
    auto& p = plan_[i];
    uint64_t b = uint64_t(shape_numel(p.shape)) * dtype_size(p.dtype);
    h[p.name] = {
        {"dtype", dtype_name(p.dtype)}, {"shape", p.shape}, {"data_offsets", {off, off + b}}};
    off += b;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string path = dir_ + "/" + sh.file + ".tmp";
  out_ = std::fopen(path.c_str(), "wb");
  if (!out_) fail(path, ": cannot create: ", std::strerror(errno));
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  if (std::fwrite(len, 1, 8, out_) != 8 || std::fwrite(text.data(), 1, n, out_) != n)
    fail(path, ": write failed: ", std::strerror(errno));
}

void SafetensorsWriter::begin_tensor(const std::string& name, size_t nbytes) {
  if (next_ >= plan_.size()) fail("safetensors writer: tensor '", name, "' is not in the plan");
  auto& p = plan_[next_];
  if (p.name != name)
    fail("safetensors writer: expected tensor '", p.name, "' next, got '", name, "'");
  size_t want = size_t(shape_numel(p.shape)) * dtype_size(p.dtype);
  if (want != nbytes)
    fail("safetensors writer: tensor '", name, "' has ", nbytes, " bytes, plan says ", want);
  auto& sh = shards_[cur_shard_];
  if (next_ >= sh.first + sh.count) {
    std::fclose(out_);
    out_ = nullptr;
    open_shard(cur_shard_ + 1);
  }
}

void SafetensorsWriter::write(const std::string& name, const void* bytes, size_t nbytes) {
  throw_if_interrupted();
  begin_tensor(name, nbytes);
  if (nbytes && std::fwrite(bytes, 1, nbytes, out_) != nbytes)
    fail(dir_, "/", shards_[cur_shard_].file, ": write failed: ", std::strerror(errno));
  ++next_;
}

void SafetensorsWriter::copy_from(const std::string& name, const SafetensorsFile& src,
                                  const TensorInfo& info) {
  const size_t nbytes = info.end - info.begin;
  throw_if_interrupted();
  begin_tensor(name, nbytes);
  if (std::fflush(out_) != 0)
    fail(dir_, "/", shards_[cur_shard_].file, ": write failed: ", std::strerror(errno));
  // In-kernel copy (no pass through user memory; a reflink where the filesystem can).
  loff_t in = loff_t(src.header().data_start + info.begin);
  size_t left = nbytes;
  while (left > 0) {
    ssize_t n = copy_file_range(src.fd(), &in, fileno(out_), nullptr, left, 0);
    if (n <= 0) break;  // unsupported here (or EOF): finish with plain writes below
    left -= size_t(n);
  }
  std::fseek(out_, 0, SEEK_END);  // resynchronise stdio with the descriptor's offset
  if (left > 0) {
    const uint8_t* p = src.map_data() + (size_t(in));
    if (std::fwrite(p, 1, left, out_) != left)
      fail(dir_, "/", shards_[cur_shard_].file, ": write failed: ", std::strerror(errno));
  }
  ++next_;
}

void SafetensorsWriter::finish() {
  if (next_ != plan_.size())
    fail("safetensors writer: ", plan_.size() - next_,
         " planned tensors were never written (next: '", plan_[next_].name, "')");
  if (plan_.empty()) open_shard(0);  // an empty checkpoint is still a valid file
  if (out_ && std::fclose(out_) != 0) fail(dir_, ": closing shard failed: ", std::strerror(errno));
  out_ = nullptr;
  for (auto& s : shards_) {
    std::string from = dir_ + "/" + s.file + ".tmp", to = dir_ + "/" + s.file;
    if (std::rename(from.c_str(), to.c_str()) != 0)
      fail(to, ": rename failed: ", std::strerror(errno));
  }
  if (shards_.size() > 1) {
    json idx;
    idx["metadata"] = {{"total_size", total_}};
    json wm = json::object();
    for (auto& s : shards_)
      for (size_t i = s.first; i < s.first + s.count; ++i) wm[plan_[i].name] = s.file;
    idx["weight_map"] = wm;
    std::string path = dir_ + "/" + basename_ + ".safetensors.index.json";
    std::FILE* f = std::fopen((path + ".tmp").c_str(), "wb");
    if (!f) fail(path, ": cannot create: ", std::strerror(errno));
    std::string text = idx.dump(2) + "\n";
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0) fail(path, ": rename failed");
  }
  finished_ = true;
}

uint64_t parse_byte_size(const std::string& s, const std::string& what) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit((unsigned char)s[i]) || s[i] == '.')) ++i;
  if (i == 0) fail(what, ": cannot parse size '", s, "' (e.g. 5GB, 500MB)");
  double v = std::stod(s.substr(0, i));
  std::string u = s.substr(i);
  for (auto& c : u) c = char(std::toupper((unsigned char)c));
  double m = 1;
  if (u == "" || u == "B")
    m = 1;
  else if (u == "KB")
    m = 1e3;
  else if (u == "MB")
    m = 1e6;
  else if (u == "GB")
    m = 1e9;
  else if (u == "KIB")
    m = 1024.0;
  else if (u == "MIB")
    m = 1024.0 * 1024;
  else if (u == "GIB")
    m = 1024.0 * 1024 * 1024;
  else
    fail(what, ": unknown size unit '", u, "' in '", s, "'");
  return uint64_t(v * m);
}

}  // namespace lamina
