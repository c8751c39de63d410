// Reference softmax cross-entropy over the vocabulary, one position at a time, in double.
#include <algorithm>
#include <cmath>

#include "kernels/ref/ref.h"

namespace distill::ref {
namespace {
// logsumexp of one row (V), shifted by its max.
double ce_lse(const float* row, int V) {
  double mx = -INFINITY;
  for (int i = 0; i < V; ++i) mx = std::max(mx, double(row[i]));
  double s = 0.0;
  for (int i = 0; i < V; ++i) s += std::exp(row[i] - mx);
  return mx + std::log(s);
}
}  // namespace

// logits (N,V); targets (N), < 0 = masked; losses (N) = lse - logit[target] (0 when masked);
// lse (N) for every row.
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V) {
  for (int n = 0; n < N; ++n) {
    const float* row = logits + long(n) * V;
    const double l = ce_lse(row, V);
    if (lse) lse[n] = float(l);
    losses[n] = targets[n] < 0 ? 0.0f : float(l - row[targets[n]]);
  }
}

// dlogits (N,V) += dlosses[n] (softmax - onehot(target)); nothing for masked rows.
void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int N, int V) {
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const float* row = logits + long(n) * V;
    for (int i = 0; i < V; ++i) {
      const double p = std::exp(double(row[i]) - lse[n]);
      dlogits[long(n) * V + i] += float(dlosses[n] * (p - (i == targets[n] ? 1.0 : 0.0)));
    }
  }
}

// losses as the forward; logits overwritten with dlosses[n] (softmax - onehot), 0 when masked.
void crossentropy_fused(float* logits, float* losses, const int32_t* targets,
                        const float* dlosses, int N, int V) {
  for (int n = 0; n < N; ++n) {
    float* lg = logits + long(n) * V;
    const double l = ce_lse(lg, V);
    const int32_t tgt = targets[n];
    losses[n] = tgt < 0 ? 0.0f : float(l - lg[tgt]);
    for (int i = 0; i < V; ++i)
      lg[i] = tgt < 0 ? 0.0f : float(dlosses[n] * (std::exp(lg[i] - l) - (i == tgt ? 1.0 : 0.0)));
  }
}

}  // namespace distill::ref
