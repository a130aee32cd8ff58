// Writing .npy arrays (NumPy format 1.0) so logits can be compared in Python.
#pragma once
#include <string>

#include "core/tensor.h"

namespace lamina {

// Writes an F32 tensor as a little-endian '<f4' C-order array, atomically.
void write_npy(const std::string& path, const Tensor& t);

}  // namespace lamina
