#include "train/lm_step.h"

#include "kernels/kernels.h"

namespace distill {

int64_t count_targets(const int32_t* targets, size_t n) {
  int64_t count = 0;
  for (size_t i = 0; i < n; i++) count += targets[i] >= 0;
  return count;
}

LossSum lm_forward_backward(Model& model, const int32_t* ids, const int32_t* targets, int B, int T,
                            float grad_scale) {
  const int N = B * T, V = model.config().vocab_size;
  float* logits = model.forward(ids, B, T);
  std::vector<float> losses(N), dlosses(N, grad_scale);
  crossentropy_fused(logits, losses.data(), targets, dlosses.data(), N, V);  // logits -> dlogits
  model.backward(logits);
  LossSum out;
  for (int n = 0; n < N; n++) out.sum += losses[n];
  out.count = count_targets(targets, N);
  return out;
}

LossSum lm_forward_loss(Model& model, const int32_t* ids, const int32_t* targets, int B, int T) {
  const int N = B * T, V = model.config().vocab_size;
  const float* logits = model.forward(ids, B, T);
  std::vector<float> losses(N);
  crossentropy_forward(losses.data(), nullptr, logits, targets, N, V);
  LossSum out;
  for (int n = 0; n < N; n++) out.sum += losses[n];
  out.count = count_targets(targets, N);
  return out;
}

}  // namespace distill
