// SIGINT / SIGTERM and temporary outputs: one mechanism for every command.
//
// main() installs the handler for every command. While nothing is being written (no
// WritingOutput alive and no polling loop declared), a signal ends the process at once, as
// usual: there is nothing half-written to clean up. While an output is being written (an
// OutputDir, a GGUF or safetensors writer, an atomic file write) or a loop has declared that it
// polls (training steps, up-scaling), the handler only sets a flag: the writer's next
// throw_if_interrupted() throws, and the unwinding destructors remove every temporary. A second
// signal while the first is pending ends the process at once (the next run removes what it left:
// remove_stale_temporaries in io/output_dir.h).
#pragma once

namespace lamina {

void install_interrupt_handler();  // SIGINT and SIGTERM; idempotent
// A long loop that calls throw_if_interrupted() between units of work (a training step, a
// tensor): from now on signals are turned into an error at the next poll.
void enable_interrupt_polling();
void throw_if_interrupted();
bool interrupt_pending();

// RAII: an output is being written; signals become a flag (see above) while one is alive.
class WritingOutput {
 public:
  WritingOutput();
  ~WritingOutput();
  WritingOutput(const WritingOutput&) = delete;
  WritingOutput& operator=(const WritingOutput&) = delete;
};

}  // namespace lamina
