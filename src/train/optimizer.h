// AdamW (torch.optim.AdamW's update, decoupled weight decay), learning-rate schedules as
// transformers' get_scheduler computes them, and gradient clipping by global norm.
#pragma once
#include <cstdint>
#include <string>

#include "train/params.h"

namespace lamina {

struct AdamWConfig {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(ParamStore& p, const AdamWConfig& cfg);
  // One update with learning rate lr (from the schedule); step counts from 1. Returns false when
  // a parameter or moment became NaN or infinite (the caller must not save that state).
  [[nodiscard]] bool update(double lr);
  int64_t step() const { return step_; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }
  void set_step(int64_t s) { step_ = s; }

 private:
  ParamStore& p_;
  AdamWConfig cfg_;
  Tensor m_, v_;  // F32 [total], same layout as the parameters
  int64_t step_ = 0;
};

enum class Schedule { Constant, Linear, Cosine };
Schedule parse_schedule(const std::string& name);  // constant, linear, cosine

struct ScheduleConfig {
  Schedule kind = Schedule::Cosine;
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;   // ceil(warmup_ratio * total_steps), as transformers
  double min_lr_ratio = 0.0;  // floor of the decay as a fraction of the peak
};

// Multiplier of the peak lr for optimizer step `step` (0-based, as transformers' LambdaLR: the
// first update uses step 0, so with warmup it is 0).
double lr_factor(const ScheduleConfig& s, int64_t step);
int64_t warmup_steps_for(double ratio, int64_t total_steps);

// Global L2 norm of all gradients; scales them by max_norm / (norm + 1e-6) when above max_norm
// (torch.nn.utils.clip_grad_norm_). max_norm <= 0 only measures. Returns the norm before clipping.
double clip_grad_norm(ParamStore& p, double max_norm);

}  // namespace lamina
