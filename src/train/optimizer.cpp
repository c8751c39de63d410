#include "train/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace distill {

AdamW::AdamW(const Model& model, const AdamWOptions& options) : opt_(options) {
  m_.resize(model.num_params());
  v_.resize(model.num_params());
  for (const ParamSpec& s : model.param_specs()) decay_.push_back(s.decay ? 1 : 0);
}

void AdamW::step(Model& model, float lr, float grad_scale) {
  step(model, lr, {{0, model.num_params()}}, grad_scale);
}

void AdamW::step(Model& model, float lr, const std::vector<std::pair<size_t, size_t>>& ranges,
                 float grad_scale) {
  t_++;
  const float b1 = opt_.beta1, b2 = opt_.beta2, eps = opt_.eps;
  const double bc1 = 1.0 - std::pow(double(b1), double(t_));
  const double bc2 = 1.0 - std::pow(double(b2), double(t_));
  const float step_size = float(lr / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const auto& specs = model.param_specs();
  float* params = model.params();
  const float* grads = model.grads();
  float* m = m_.data();
  float* v = v_.data();
  for (size_t si = 0; si < specs.size(); si++) {
    const ParamSpec& s = specs[si];
    const float shrink = decay_[si] ? 1.0f - lr * opt_.weight_decay : 1.0f;
    for (const auto& [lo, hi] : ranges) {
      const size_t begin = std::max(lo, s.offset), end = std::min(hi, s.offset + s.numel);
      if (begin >= end) continue;
#pragma omp parallel for simd schedule(static)
      for (size_t i = begin; i < end; i++) {
        const float g = grads[i] * grad_scale;
        const float p = params[i] * shrink;
        const float mi = b1 * m[i] + (1.0f - b1) * g;
        const float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = p - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
      }
    }
  }
}

float grad_norm(const float* grads, size_t n) {
  // Per-thread partial sums (vectorized: lanes summed in a fixed order) over a fixed partition,
  // combined in thread order: deterministic for a fixed thread count.
  const int nthreads = omp_get_max_threads();
  std::vector<double> partial(nthreads, 0.0);
#pragma omp parallel num_threads(nthreads)
  {
    const size_t t = size_t(omp_get_thread_num()), per = (n + nthreads - 1) / nthreads;
    const size_t begin = std::min(n, t * per), end = std::min(n, begin + per);
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (size_t i = begin; i < end; i++) acc += double(grads[i]) * grads[i];
    partial[t] = acc;
  }
  double sum = 0.0;
  for (double p : partial) sum += p;
  return float(std::sqrt(sum));
}

float clip_scale(float norm, float max_norm) {
  return max_norm > 0.0f && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
}

float clip_grad_norm(float* grads, size_t n, float max_norm) {
  const float norm = grad_norm(grads, n);
  const float scale = clip_scale(norm, max_norm);
  if (scale != 1.0f) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) grads[i] *= scale;
  }
  return norm;
}

}  // namespace distill
