// Training text as tokens: documents tokenised (BOS by the tokenizer's rule, EOS appended) and
// joined into one stream, cached on disk as little-endian uint32 and read back through a memory
// map, so a corpus larger than RAM works. Windows of T+1 tokens with stride T make the
// sequences (every token is predicted once).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

class TokenCorpus {
 public:
  // Inputs: .txt (documents separated by blank lines) and .jsonl (one object per line with a
  // string field "text"). The cache file name is a hash of the inputs (paths, sizes, mtimes) and
  // of the tokenizer, so changed data or a changed tokenizer re-tokenises.
  static TokenCorpus build(const std::vector<std::string>& files, const Tokenizer& tok,
                           const std::string& tokenizer_file, const std::string& cache_dir,
                           bool progress = true);
  static TokenCorpus open(const std::string& cache_file);

  int64_t num_tokens() const { return n_; }
  int64_t num_documents() const { return docs_; }
  int64_t num_windows(int64_t T) const { return n_ > T ? (n_ - 1) / T : 0; }
  // Window i: tokens [i*T, i*T + T + 1).
  void window(int64_t i, int64_t T, std::vector<int32_t>& out) const;
  const std::string& cache_file() const { return path_; }
  bool from_cache() const { return from_cache_; }

 private:
  std::shared_ptr<MappedFile> map_;
  const uint32_t* data_ = nullptr;
  int64_t n_ = 0, docs_ = 0;
  std::string path_;
  bool from_cache_ = false;
};

}  // namespace lamina
