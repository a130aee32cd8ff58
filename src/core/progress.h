// A one-line progress bar on stderr with rate and ETA; silent when stderr is not a terminal
// (logs and CI stay clean) unless forced.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lamina {

class Progress {
 public:
  // unit "B" formats amounts as bytes (KB/MB/GB), anything else as counts with that unit.
  Progress(std::string label, int64_t total, std::string unit = "");
  ~Progress();
  void advance(int64_t n = 1) { update(done_ + n); }
  void update(int64_t done);
  void finish();
  // Text shown after the bar (e.g. "loss 2.31 lr 1e-4").
  void set_note(std::string note) { note_ = std::move(note); }

 private:
  void draw(bool final);
  std::string label_, unit_, note_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_bytes(double bytes);
// Parameter counts: 410.69K, 151.87M, 10.73B.
std::string format_count(double n);
std::string format_duration(double seconds);
// Peak resident memory of this process (VmHWM), 0 where unavailable.
uint64_t peak_rss_bytes();

}  // namespace lamina
