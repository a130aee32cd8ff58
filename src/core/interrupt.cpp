#include "core/interrupt.h"

#include <atomic>
#include <csignal>

#include "core/error.h"

namespace lamina {
namespace {
volatile std::sig_atomic_t g_signal = 0;
std::atomic<int> g_writers{0};
std::atomic<bool> g_polling{false};

extern "C" void on_signal(int s) {
  if (g_signal || (g_writers.load() == 0 && !g_polling.load())) {
    // Nothing to clean up (or the user insists): the default action, now.
    std::signal(s, SIG_DFL);
    std::raise(s);
    return;
  }
  g_signal = s;
}
}  // namespace

void install_interrupt_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

void enable_interrupt_polling() {
  install_interrupt_handler();
  g_polling = true;
}

bool interrupt_pending() {
  return g_signal != 0;
}

void throw_if_interrupted() {
  if (g_signal) fail("interrupted (signal ", int(g_signal), "); unfinished outputs were removed");
}

WritingOutput::WritingOutput() {
  ++g_writers;
}
WritingOutput::~WritingOutput() {
  --g_writers;
}

}  // namespace lamina
