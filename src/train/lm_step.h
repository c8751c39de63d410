// Language-modelling steps: next-token cross-entropy over the positions whose target is >= 0.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace distill {

struct LossSum {
  double sum = 0.0;   // summed per-token losses
  int64_t count = 0;  // positions with a target
  double mean() const { return count ? sum / double(count) : 0.0; }
};

int64_t count_targets(const int32_t* targets, size_t n);

// Forward and backward of the summed cross-entropy, scaled by grad_scale per target token:
// with grad_scale = 1 / (target tokens in the whole optimizer step) the accumulated gradient is
// that of the mean loss over the step, however the tokens are split over micro-batches.
// Gradients accumulate into model.grads().
LossSum lm_forward_backward(Model& model, const int32_t* ids, const int32_t* targets, int B, int T,
                            float grad_scale);

// Forward only (evaluation).
LossSum lm_forward_loss(Model& model, const int32_t* ids, const int32_t* targets, int B, int T);

}  // namespace distill
