#include "model/rope_frequencies.h"

#include "kernels/ops.h"

namespace lamina {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  std::vector<float> inv = rope_default_inv_freq(c.head_dim, c.rope_theta);
  const RopeScaling& s = c.rope_scaling;
  const float factor = float(s.factor);
  if (s.type == "linear") {
    for (float& f : inv) f /= factor;
  } else if (s.type == "freq_factors") {
    for (size_t i = 0; i < inv.size() && i < s.freq_factors.size(); ++i)
      inv[i] /= s.freq_factors[i];
  } else if (s.type == "llama3") {
    // _compute_llama3_parameters: wavelengths longer than old_context / low_freq_factor are
    // divided by factor, shorter than old_context / high_freq_factor kept, and between them
    // smooth = (old_context / wavelen - low) / (high - low) blends the two.
    const float old_ctx = float(s.original_max_position_embeddings);
    const float low = float(s.low_freq_factor), high = float(s.high_freq_factor);
    const float low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    const float two_pi = float(2.0 * 3.14159265358979323846);
    for (float& f : inv) {
      const float wavelen = two_pi / f;
      float scaled = wavelen > low_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth = (old_ctx / wavelen - low) / (high - low);
        scaled = (1 - smooth) * scaled / factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}

}  // namespace lamina
