// Writing a model directory atomically: everything goes to a temporary sibling directory that is
// renamed into place by commit(); if anything throws first, the temporary directory is removed,
// so a failure or an interrupt never leaves a half-written model under the final name.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/interrupt.h"
#include "io/file_lock.h"

namespace lamina {

class OutputDir {
 public:
  // Refuses an existing `final_path` unless force (then it is replaced at commit). Holds
  // FINAL.lock while it lives (a second writer of the same output fails at once) and removes
  // temporaries FINAL.tmp-PID that dead processes left.
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
  std::unique_ptr<FileLock> lock_;
  WritingOutput writing_;  // a signal removes the temporary directory (core/interrupt.h)
};

// Refuses an output that is, contains or lies inside one of the inputs (real paths compared, so
// "M/.", "./M" and symbolic links are seen through): writing there would destroy the input.
// Fails with "--OUT PATH: is|contains|lies inside the input --IN PATH". Each entry is
// (option name, path).
void check_output_outside_inputs(const std::pair<std::string, std::string>& output,
                                 const std::vector<std::pair<std::string, std::string>>& inputs);

// Removes NAME.tmp-PID entries in dir whose process PID no longer runs (left by kill -9 or a
// crash), and NAME.lock files nobody holds (a killed writer's), for names starting with prefix.
// Returns how many were removed.
int remove_stale_temporaries(const std::string& dir, const std::string& prefix = "");

// Writes text to path atomically (path.tmp-PID, then rename; the temporary is removed if either
// step fails).
void write_file_atomic(const std::string& path, const std::string& text);
void copy_file(const std::string& from, const std::string& to);

}  // namespace lamina
