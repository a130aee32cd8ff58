#include "model/rope_frequencies.h"

#include <algorithm>
#include <cmath>

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
  } else if (s.type == "yarn") {
    // _compute_yarn_parameters: dimensions rotating more than beta_fast times over the original
    // context keep their frequency (extrapolation), fewer than beta_slow times are divided by
    // factor (interpolation), a linear ramp over the dimensions between blends the two.
    const double dim = double(c.head_dim), base = c.rope_theta;
    const double two_pi = 2.0 * 3.14159265358979323846;
    auto correction_dim = [&](double rotations) {
      return dim * std::log(double(s.original_max_position_embeddings) / (rotations * two_pi)) /
             (2.0 * std::log(base));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, dim - 1);
    if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
    for (size_t i = 0; i < inv.size(); ++i) {
      // transformers' pos_freqs, base^(2i/dim) in F32 (as rope_default_inv_freq computes it)
      const float pos = std::pow(float(base), float(2 * i) / float(c.head_dim));
      const float extra = 1.0f / pos, inter = 1.0f / (factor * pos);
      float ramp = (float(i) - float(low)) / float(high - low);
      ramp = std::min(1.0f, std::max(0.0f, ramp));
      const float keep = 1.0f - ramp;  // inv_freq_extrapolation_factor
      inv[i] = inter * (1.0f - keep) + extra * keep;
    }
  }
  return inv;
}

float rope_attention_factor(const ModelConfig& c, bool local) {
  return !local && c.rope_scaling.type == "yarn" ? float(c.rope_scaling.attention_factor) : 1.0f;
}

}  // namespace lamina
