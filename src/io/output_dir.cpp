#include "io/output_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
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
  const fs::path parent = fs::path(final_).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec))
    fail(final_, ": parent directory ", parent.string(), " does not exist");
  lock_ = std::make_unique<FileLock>(final_ + ".lock", final_, true);
  if (fs::exists(final_, ec) && !force_)
    fail(final_, ": already exists (use --force to replace it)");
  tmp_ = final_ + ".tmp-" + std::to_string(::getpid());
  remove_stale_temporaries(parent.empty() ? "." : parent.string(),
                           fs::path(final_).filename().string() + ".tmp-");
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
  throw_if_interrupted();
  std::error_code ec;
  if (force_ && fs::exists(final_, ec)) fs::remove_all(final_, ec);
  fs::rename(tmp_, final_, ec);
  if (ec) fail(final_, ": cannot move the finished output into place: ", ec.message());
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  // A per-process temporary name: ranks of a data-parallel job may write the same file at once.
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  WritingOutput writing;
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path, ": cannot create: ", std::strerror(errno));
    f << text;
    f.flush();
    if (!f) {
      const int err = errno;
      std::remove(tmp.c_str());
      fail(path, ": write failed: ", std::strerror(err ? err : EIO));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail(path, ": rename failed: ", std::strerror(err));
  }
}

namespace {

// The real path of p, existing or not (symbolic links and "." / ".." resolved as far as they go).
fs::path real_path(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : r;
}

// Whether `inner` is `outer` or lies below it.
bool within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin(), o = outer.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

void check_output_outside_inputs(const std::pair<std::string, std::string>& output,
                                 const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (output.second.empty()) return;
  const fs::path out = real_path(output.second);
  for (auto& [opt, in] : inputs) {
    if (in.empty()) continue;
    const fs::path ip = real_path(in);
    const char* how = nullptr;
    if (out == ip)
      how = "is";
    else if (within(out, ip))
      how = "lies inside";
    else if (within(ip, out))
      how = "contains";
    if (how)
      fail("--", output.first, " ", output.second, ": ", how, " the input --", opt, " ", in,
           " (writing there would destroy it; choose another output)");
  }
}

int remove_stale_temporaries(const std::string& dir, const std::string& prefix) {
  std::error_code ec;
  int removed = 0;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const auto at = name.rfind(".tmp-");
    if (at == std::string::npos || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(at + 5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::atol(digits.c_str());
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // still running (or not ours)
    std::error_code rec;
    fs::remove_all(e.path(), rec);
    if (!rec) ++removed;
  }
  // Lock files beside outputs (NAME.lock) whose holder died: nobody holds their flock. The lock
  // is taken before the unlink, so a writer arriving meanwhile retries on a fresh file (FileLock
  // checks that the inode it locked is still the one at the path).
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".lock") != 0 || name[0] == '.' ||
        name.compare(0, prefix.size(), prefix) != 0 || !e.is_regular_file())
      continue;
    const int fd = ::open(e.path().c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      if (::unlink(e.path().c_str()) == 0) ++removed;
    }
    ::close(fd);
  }
  return removed;
}

void copy_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) fail(from, ": cannot copy to ", to, ": ", ec.message());
}

}  // namespace lamina
