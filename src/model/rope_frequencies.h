// The RoPE frequencies of a model: plain 1 / theta^(2i/hd), or scaled as its config says
// (rope_scaling "linear", "llama3": Llama 3.1+'s low frequencies divided by factor, high ones
// kept, a smooth blend between, or "yarn"), computed in F32 in transformers' order of operations
// (modeling_rope_utils) so that angles round as there.
#pragma once
#include <vector>

#include "io/model_config.h"

namespace lamina {

std::vector<float> rope_inv_freq(const ModelConfig& c);  // [head_dim / 2]
// What RoPE's cos and sin are multiplied by (yarn's attention_factor; 1 otherwise, and on Gemma 3's
// local layers, whose RoPE is plain): q and k are scaled by it after the rotation.
float rope_attention_factor(const ModelConfig& c, bool local = false);

}  // namespace lamina
