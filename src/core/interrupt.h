// Ctrl-C during a long write: the handler only sets a flag; loops call throw_if_interrupted()
// so the error unwinds through destructors that remove temporary outputs.
#pragma once

namespace lamina {

void install_interrupt_handler();  // SIGINT and SIGTERM
void throw_if_interrupted();

}  // namespace lamina
