#include "io/output_dir.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace lamina {
namespace fs = std::filesystem;

OutputDir::OutputDir(std::string final_path, bool force)
    : final_(std::move(final_path)), force_(force) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  if (final_.empty()) fail("--out: empty path");
  std::error_code ec;
  if (fs::exists(final_, ec) && !force_)
    fail(final_, ": already exists (use --force to replace it)");
  fs::path parent = fs::path(final_).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec))
    fail(final_, ": parent directory ", parent.string(), " does not exist");
  tmp_ = final_ + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp_, ec);
  if (!fs::create_directory(tmp_, ec)) fail(tmp_, ": cannot create directory: ", ec.message());
}

OutputDir::~OutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void OutputDir::commit() {
  std::error_code ec;
  if (force_ && fs::exists(final_, ec)) fs::remove_all(final_, ec);
  fs::rename(tmp_, final_, ec);
  if (ec) fail(final_, ": cannot move the finished output into place: ", ec.message());
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  // A per-process temporary name: ranks of a data-parallel job may write the same file at once.
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path, ": cannot create: ", std::strerror(errno));
    f << text;
    if (!f) fail(path, ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(path, ": rename failed: ", std::strerror(errno));
}

void copy_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) fail(from, ": cannot copy to ", to, ": ", ec.message());
}

}  // namespace lamina
