#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace lamina {

AdamW::AdamW(ParamStore& p, const AdamWConfig& cfg)
    : p_(p),
      cfg_(cfg),
      m_(Tensor::zeros(DType::F32, {int64_t(p.gtotal)})),
      v_(Tensor::zeros(DType::F32, {int64_t(p.gtotal)})) {
  // The CLI checks these ranges when it parses them; a library caller gets the same rule.
  auto bad = [](double x, double lo, double hi) { return !(x >= lo && x < hi); };
  if (bad(cfg.lr, 0, HUGE_VAL)) fail("AdamW: lr must be a finite number >= 0, got ", cfg.lr);
  if (bad(cfg.beta1, 0, 1) || bad(cfg.beta2, 0, 1))
    fail("AdamW: betas must be in [0, 1), got ", cfg.beta1, ", ", cfg.beta2);
  if (!(cfg.eps > 0) || bad(cfg.eps, 0, HUGE_VAL))
    fail("AdamW: eps must be a finite number > 0, got ", cfg.eps);
  if (bad(cfg.weight_decay, 0, HUGE_VAL))
    fail("AdamW: weight decay must be a finite number >= 0, got ", cfg.weight_decay);
}

bool AdamW::update(double lr) {
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(step_)),
               bc2 = 1.0 - std::pow(cfg_.beta2, double(step_));
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2);
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2)), eps = float(cfg_.eps);
  bool finite = true;
  for (size_t t = 0; t < p_.specs.size(); ++t) {
    if (!p_.trainable[t]) continue;
    float* w = p_.param(t);
    const float* g = p_.grad(t);
    float* m = m_.f32() + p_.goffset[t];  // moments share the gradients' layout
    float* v = v_.f32() + p_.goffset[t];
    const int64_t n = p_.numel(t);
    const float decay = p_.decays(t) ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
    // probe stays 0 while every new value is finite (x * 0 is NaN for NaN and +-inf).
    float probe = 0.f;
#pragma omp parallel for simd reduction(+ : probe) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      w[i] *= decay;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
      probe += (w[i] + m[i] + v[i]) * 0.f;
    }
    finite = finite && probe == 0.f;
  }
  return finite;
}

Schedule parse_schedule(const std::string& name) {
  if (name == "constant") return Schedule::Constant;
  if (name == "linear") return Schedule::Linear;
  if (name == "cosine") return Schedule::Cosine;
  fail("--schedule: unknown schedule '", name, "' (constant, linear, cosine)");
}

int64_t warmup_steps_for(double ratio, int64_t total) {
  if (ratio < 0 || ratio > 1) fail("--warmup-ratio must be in [0, 1]");
  return int64_t(std::ceil(ratio * double(total)));
}

double lr_factor(const ScheduleConfig& s, int64_t step) {
  if (step < s.warmup_steps) return double(step) / double(std::max<int64_t>(1, s.warmup_steps));
  if (s.kind == Schedule::Constant) return 1.0;
  const double progress =
      double(step - s.warmup_steps) / double(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  double decay;
  if (s.kind == Schedule::Linear)
    decay = std::max(0.0, 1.0 - progress);
  else
    decay = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * decay;
}

double clip_grad_norm(ParamStore& p, double max_norm) {
  // Frozen tensors' gradients are dropped first: they neither count in the norm nor update.
  for (size_t t = 0; t < p.specs.size(); ++t)
    if (!p.trainable[t] && p.has_grad(t)) std::fill(p.grad(t), p.grad(t) + p.numel(t), 0.f);
  const float* g = p.grads.f32();
  double ss = 0;
#pragma omp parallel for reduction(+ : ss)
  for (int64_t i = 0; i < int64_t(p.gtotal); ++i) ss += double(g[i]) * g[i];
  const double norm = std::sqrt(ss);
  const double coef = max_norm / (norm + 1e-6);
  if (max_norm > 0 && coef < 1.0) {
    const float c = float(coef);
    float* gm = p.grads.f32();
#pragma omp parallel for simd
    for (int64_t i = 0; i < int64_t(p.gtotal); ++i) gm[i] *= c;
  }
  return norm;
}

}  // namespace lamina
