// Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay (WSD, Hu et
// al. 2024 "MiniCPM": constant after warmup, linear decay over the last decay_fraction of steps).
#pragma once
#include <string>

namespace distill {

struct LrSchedule {
  enum class Kind { Constant, Cosine, Wsd } kind = Kind::Cosine;
  float max_lr = 1e-3f;
  float min_lr = 1e-4f;        // reached at the last step (cosine, wsd)
  int warmup_steps = 0;        // linear from max_lr/warmup to max_lr
  int total_steps = 1;
  float decay_fraction = 0.2f; // wsd only

  static Kind parse_kind(const std::string& name);  // "constant" | "cosine" | "wsd"
  // The learning rate for 0-based step `step`.
  float at(int step) const;
};

}  // namespace distill
