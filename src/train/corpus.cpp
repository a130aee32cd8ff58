#include "train/corpus.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "io/fingerprint.h"
#include "io/jsonl.h"

namespace lamina {
namespace {

// Reads the inputs document by document and hands each to `emit`.
template <class F>
void for_each_document(const std::string& path, F emit) {
  if (path.size() > 6 && path.ends_with(".jsonl")) {
    for_each_jsonl_line(path, [&](const std::string& line, int64_t n) {
      emit(jsonl_text(line, path + ":" + std::to_string(n)));
    });
    return;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open");
  std::string line, doc;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (!doc.empty()) emit(doc), doc.clear();
    } else {
      doc += doc.empty() ? line : "\n" + line;
    }
  }
  if (!doc.empty()) emit(doc);
}

}  // namespace

TokenCorpus TokenCorpus::build(const std::vector<std::string>& files, const Tokenizer& tok,
                               const std::string& tokenizer_file, const std::string& cache_dir,
                               bool progress) {
  if (files.empty()) fail("--data: no training files given");
  uint64_t h = fnv1a("lamina-corpus-v1", 16);
  uint64_t total_bytes = 0;
  for (auto& f : files) {
    struct stat st {};
    if (stat(f.c_str(), &st) != 0) fail(f, ": not found");
    std::string abs = std::filesystem::absolute(f).string();
    h = fnv1a(abs.data(), abs.size(), h);
    h = fnv1a(&st.st_size, sizeof st.st_size, h);
    h = fnv1a(&st.st_mtim, sizeof st.st_mtim, h);
    total_bytes += uint64_t(st.st_size);
  }
  std::string tk = read_text_file(tokenizer_file);
  h = fnv1a(tk.data(), tk.size(), h);
  int64_t vocab = tok.size();
  h = fnv1a(&vocab, sizeof vocab, h);
  std::filesystem::create_directories(cache_dir);
  char name[64];
  std::snprintf(name, sizeof name, "/corpus-%016llx.tokens", (unsigned long long)h);
  std::string path = cache_dir + name;
  if (file_exists(path)) {
    TokenCorpus c = open(path);
    c.from_cache_ = true;
    return c;
  }
  // Tokenise to a temporary file, then rename: an interrupted run never leaves a partial cache.
  std::string tmp = path + ".tmp-" + std::to_string(getpid());  // ranks may tokenise at once
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out) fail(tmp, ": cannot create");
  int64_t docs = 0;
  uint64_t done = 0;
  Progress bar("tokenize", int64_t(total_bytes), "B");
  try {
    for (auto& f : files) {
      for_each_document(f, [&](const std::string& text) {
        auto ids = tok.encode(text, tok.add_bos_default());
        ids.push_back(tok.eos_id());
        std::vector<uint32_t> u(ids.begin(), ids.end());
        if (std::fwrite(u.data(), 4, u.size(), out) != u.size()) fail(tmp, ": write failed");
        ++docs;
        done += text.size() + 1;
        if (progress) bar.update(int64_t(std::min(done, total_bytes)));
      });
    }
  } catch (...) {
    std::fclose(out);
    std::remove(tmp.c_str());
    throw;
  }
  uint32_t trailer[2] = {0x4c4d4e41u /* "ANML" */, uint32_t(docs)};
  std::fwrite(trailer, 4, 2, out);
  if (std::fclose(out) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(path, ": cannot write the token cache");
  bar.finish();
  return open(path);
}

TokenCorpus TokenCorpus::open(const std::string& path) {
  TokenCorpus c;
  c.map_ = MappedFile::open(path);
  c.path_ = path;
  const size_t bytes = c.map_->size();
  if (bytes < 8 || bytes % 4) fail(path, ": not a lamina token cache");
  auto* p = reinterpret_cast<const uint32_t*>(c.map_->data());
  const size_t words = bytes / 4;
  if (p[words - 2] != 0x4c4d4e41u) fail(path, ": not a lamina token cache (bad trailer)");
  c.data_ = p;
  c.n_ = int64_t(words - 2);
  c.docs_ = p[words - 1];
  return c;
}

void TokenCorpus::window(int64_t i, int64_t T, std::vector<int32_t>& out) const {
  if (i < 0 || i >= num_windows(T)) fail("corpus window ", i, " out of range");
  out.assign(data_ + i * T, data_ + i * T + T + 1);
}

}  // namespace lamina
