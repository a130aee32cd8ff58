// Writing a model directory atomically: everything goes to a temporary sibling directory that is
// renamed into place by commit(); if anything throws first, the temporary directory is removed,
// so a failure or an interrupt never leaves a half-written model under the final name.
#pragma once
#include <string>

namespace lamina {

class OutputDir {
 public:
  // Refuses an existing `final_path` unless force (then it is replaced at commit).
  OutputDir(std::string final_path, bool force);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  const std::string& path() const { return tmp_; }  // write here
  const std::string& final_path() const { return final_; }
  void commit();

 private:
  std::string final_, tmp_;
  bool force_, committed_ = false;
};

// Writes text to path atomically (path.tmp, then rename).
void write_file_atomic(const std::string& path, const std::string& text);
void copy_file(const std::string& from, const std::string& to);

}  // namespace lamina
