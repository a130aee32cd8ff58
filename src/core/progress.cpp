#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lamina {

std::string format_bytes(double b) {
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 1000 && i < 4) b /= 1000, ++i;
  char buf[32];
  std::snprintf(buf, sizeof buf, i ? "%.1f %s" : "%.0f %s", b, u[i]);
  return buf;
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.2fK", n / 1e3);
  return buf;
}

uint64_t peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %lu kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 0 || s > 1e7) return "--:--";
  int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02d:%02d", t / 60, t % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), enabled_(isatty(2)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  finish();
}

void Progress::update(int64_t done) {
  done_ = done;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_draw_).count() < 0.1 && done_ < total_) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) draw(true);
}

void Progress::draw(bool final) {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double frac = total_ > 0 ? double(done_) / double(total_) : 1.0;
  int w = 30, fill = int(frac * w);
  std::string bar(size_t(fill), '#');
  bar.resize(size_t(w), '.');
  double rate = el > 0 ? double(done_) / el : 0;
  double eta = rate > 0 ? double(total_ - done_) / rate : -1;
  std::string amt, r;
  if (unit_ == "B") {
    amt = format_bytes(double(done_)) + "/" + format_bytes(double(total_));
    r = format_bytes(rate) + "/s";
  } else {
    amt = std::to_string(done_) + "/" + std::to_string(total_);
    char b[32];
    std::snprintf(b, sizeof b, "%.1f %s/s", rate, unit_.c_str());
    r = b;
  }
  std::fprintf(stderr, "\r%s [%s] %3.0f%% %s %s %s %s", label_.c_str(), bar.c_str(), frac * 100,
               amt.c_str(), r.c_str(), final ? "in" : "ETA",
               format_duration(final ? el : eta).c_str());
  if (final) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace lamina
