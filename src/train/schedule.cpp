#include "train/schedule.h"

#include <cmath>

#include "core/error.h"

namespace distill {

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "constant") return Kind::Constant;
  if (name == "cosine") return Kind::Cosine;
  if (name == "wsd") return Kind::Wsd;
  throw Error("unknown learning-rate schedule '{}' (expected constant, cosine or wsd)", name);
}

float LrSchedule::at(int step) const {
  if (step < warmup_steps) return max_lr * float(step + 1) / float(warmup_steps);
  if (kind == Kind::Constant) return max_lr;
  const int last = total_steps > 1 ? total_steps - 1 : 1;
  if (kind == Kind::Cosine) {
    const int span = last - warmup_steps;
    if (span <= 0) return max_lr;
    const double progress = std::min(1.0, double(step - warmup_steps) / span);
    return float(min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
  }
  const int decay_steps = std::max(1, int(std::lround(decay_fraction * total_steps)));
  const int decay_start = total_steps - decay_steps;
  if (step < decay_start) return max_lr;
  const double progress = std::min(1.0, double(step - decay_start + 1) / decay_steps);
  return float(max_lr + (min_lr - max_lr) * progress);
}

}  // namespace distill
