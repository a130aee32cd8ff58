// Exclusive locks on output directories, so that two lamina processes never write the same run
// or model: the second fails at once, naming the first one's pid, instead of silently replacing
// its checkpoints and metrics. flock(2) locks are released by the kernel when the holder dies
// (kill -9 included), so a lock file left behind never blocks a later run.
#pragma once
#include <memory>
#include <string>

namespace lamina {

class FileLock {
 public:
  // Takes the lock on lock_path (created if missing) or fails with
  // "WHAT: in use by another lamina process (pid N)". With remove_when_done the lock file is
  // deleted on release (for locks beside an output that does not exist yet).
  FileLock(std::string lock_path, std::string what, bool remove_when_done);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
  bool remove_;
};

// A run directory (training --out, recipe --out), created if missing and locked through
// DIR/.lamina.lock while this lives. When this created it and the run fails (an exception
// unwinds) before anything worth keeping is there — only scaffolding: dot-files such as the lock
// and token caches, an empty metrics.jsonl — the directory is removed again, so a run refused
// for bad input leaves nothing behind. Checkpoints and finished steps are never removed.
class RunDirLock {
 public:
  explicit RunDirLock(std::string dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  std::string dir_;
  bool created_ = false;
  int exceptions_ = 0;
  std::unique_ptr<FileLock> lock_;
};

}  // namespace lamina
