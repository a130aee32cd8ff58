#include "core/interrupt.h"

#include <csignal>

#include "core/error.h"

namespace lamina {
namespace {
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int s) {
  g_signal = s;
}
}  // namespace

void install_interrupt_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

void throw_if_interrupted() {
  if (g_signal) fail("interrupted (signal ", int(g_signal), "); nothing was written");
}

}  // namespace lamina
