// The RoPE frequencies of a model: plain 1 / theta^(2i/hd), or scaled as its config says
// (rope_scaling "linear", or "llama3": Llama 3.1+'s low frequencies divided by factor, high ones
// kept, a smooth blend between), computed in F32 in transformers' order of operations
// (modeling_rope_utils) so that angles round as there.
#pragma once
#include <vector>

#include "io/model_config.h"

namespace lamina {

std::vector<float> rope_inv_freq(const ModelConfig& c);  // [head_dim / 2]

}  // namespace lamina
