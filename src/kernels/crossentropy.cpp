// Softmax + cross-entropy over the vocabulary, one row per position. Rows are independent, so the
// loop over N is split statically across threads; within a row, three vectorized passes (max,
// sum of exp, write) touch the V logits.
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {
namespace {

inline float row_max(const float* x, int V) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
  return mx;
}

// log(sum(exp(x))) computed stably around the row maximum.
inline float row_logsumexp(const float* x, int V) {
  const float mx = row_max(x, V);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < V; i++) sum += fast_exp(x[i] - mx);
  return mx + std::log(sum);
}

}  // namespace

void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float* x = logits + size_t(n) * V;
    const float l = row_logsumexp(x, V);
    if (lse) lse[n] = l;
    losses[n] = targets[n] < 0 ? 0.0f : l - x[targets[n]];
  }
}

void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    const float* x = logits + size_t(n) * V;
    float* dx = dlogits + size_t(n) * V;
    const float d = dlosses[n], l = lse[n];
#pragma omp simd
    for (int i = 0; i < V; i++) dx[i] += d * fast_exp(x[i] - l);
    dx[targets[n]] -= d;
  }
}

void crossentropy_fused(float* logits, float* losses, const int32_t* targets,
                        const float* dlosses, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float* x = logits + size_t(n) * V;
    if (targets[n] < 0) {
      losses[n] = 0.0f;
      std::memset(x, 0, sizeof(float) * V);
      continue;
    }
    const float l = row_logsumexp(x, V);
    losses[n] = l - x[targets[n]];
    const float d = dlosses[n];
#pragma omp simd
    for (int i = 0; i < V; i++) x[i] = d * fast_exp(x[i] - l);
    x[targets[n]] -= d;
  }
}

}  // namespace distill
