#include "io/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>

#include "core/error.h"

namespace lamina {

FileLock::FileLock(std::string lock_path, std::string what, bool remove_when_done)
    : path_(std::move(lock_path)), remove_(remove_when_done) {
  // A holder that deletes its lock file on release can leave us locking an unlinked inode:
  // retry until the file we locked is the one at the path.
  for (int attempt = 0; attempt < 100; ++attempt) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(what, ": cannot create the lock file ", path_, ": ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char buf[32] = {0};
      const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
      ::close(fd_);
      fd_ = -1;
      if (err != EWOULDBLOCK) fail(what, ": cannot lock ", path_, ": ", std::strerror(err));
      std::string pid = n > 0 ? std::string(buf, size_t(n)) : std::string("unknown");
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      fail(what, ": in use by another lamina process (pid ", pid, "); wait for it to finish");
    }
    struct stat held {
    }, now{};
    if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      const std::string pid = std::to_string(::getpid()) + "\n";
      if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
        // The lock holds without the pid; the message of a second writer just lacks it.
      }
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
  fail(what, ": could not take the lock ", path_);
}

FileLock::~FileLock() {
  if (fd_ < 0) return;
  if (remove_) ::unlink(path_.c_str());
  ::close(fd_);
}

RunDirLock::RunDirLock(std::string dir) : dir_(std::move(dir)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  created_ = !fs::exists(dir_, ec);
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_))
    fail(dir_, ": cannot create the output directory: ", ec ? ec.message() : "not a directory");
  exceptions_ = std::uncaught_exceptions();
  try {
    lock_ = std::make_unique<FileLock>(dir_ + "/.lamina.lock", dir_, false);
  } catch (...) {
    if (created_) fs::remove_all(dir_, ec);
    throw;
  }
}

RunDirLock::~RunDirLock() {
  namespace fs = std::filesystem;
  const bool failing = std::uncaught_exceptions() > exceptions_;
  if (created_ && failing) {
    std::error_code ec;
    bool scaffolding_only = true;
    for (auto& e : fs::directory_iterator(dir_, ec)) {
      const std::string n = e.path().filename().string();
      const bool empty_metrics = n == "metrics.jsonl" && fs::file_size(e.path(), ec) == 0;
      if (n[0] != '.' && !empty_metrics) scaffolding_only = false;
    }
    lock_.reset();
    if (scaffolding_only) fs::remove_all(dir_, ec);
  }
}

}  // namespace lamina
