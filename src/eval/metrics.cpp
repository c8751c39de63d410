#include "eval/metrics.h"

#include <algorithm>

#include <cmath>

#include "core/error.h"
#include "distill/losses.h"

namespace distill {

HeldOutWindows make_held_out_windows(const std::vector<int32_t>& tokens, int seq_len,
                                     int max_windows) {
  if (seq_len < 1) throw Error("seq-len must be at least 1, found {}", seq_len);
  if (max_windows < 1) throw Error("max-windows must be at least 1, found {}", max_windows);
  const int64_t n = int64_t(tokens.size()), span = seq_len + 1;
  if (n < span)
    throw Error(
        "held-out text has {} tokens: fewer than one window of {} (seq-len + 1); use a "
        "larger held-out split or a smaller --seq-len",
        n, span);
  HeldOutWindows w;
  w.seq_len = seq_len;
  w.source_tokens = n;
  const int64_t consecutive = (n - 1) / seq_len;  // windows of stride seq_len that fit
  w.count = std::min<int64_t>(consecutive, max_windows);
  w.tokens.resize(size_t(w.count * span));
  const int64_t last_start = n - span;
  for (int64_t i = 0; i < w.count; i++) {
    const int64_t start = consecutive <= max_windows
                              ? i * seq_len
                              : (w.count > 1 ? i * last_start / (w.count - 1) : 0);
    std::copy(tokens.begin() + start, tokens.begin() + start + span, w.tokens.begin() + i * span);
  }
  return w;
}

int32_t argmax_logit(const float* row, int V) {
  int32_t best = 0;
  for (int i = 1; i < V; i++)
    if (row[i] > row[best]) best = i;
  return best;
}

double token_nll(const float* row, int V, int32_t target) {
  double mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = std::max(mx, double(row[i]));
  double sum = 0.0;
  for (int i = 0; i < V; i++) sum += std::exp(double(row[i]) - mx);
  return mx + std::log(sum) - double(row[target]);
}

void QualityAccumulator::add(const float* logits, const float* teacher_logits,
                             const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; n++) {
    DISTILL_CHECK(targets[n] >= 0 && targets[n] < V);
    const float* z = logits + size_t(n) * V;
    const float* t = teacher_logits + size_t(n) * V;
    nll_sum_ += token_nll(z, V, targets[n]);
    const int32_t top = argmax_logit(z, V);
    agree_ += top == argmax_logit(t, V);
    correct_ += top == targets[n];
  }
  // Forward KL(p || q) of distill/losses.h at T = 1, summed over positions (normalizer 1).
  const KdLossSpec kl;  // one term, kl, weight 1, T = 1
  const std::vector<float> ones(size_t(N), 1.0f);
  kl_sum_ +=
      kd_loss_dense(kl, logits, teacher_logits, targets, ones.data(), N, V, 1.0, nullptr).loss;
  positions_ += N;
}

QualityMetrics QualityAccumulator::result() const {
  QualityMetrics m;
  m.positions = positions_;
  m.windows = windows_;
  if (positions_ == 0) return m;
  const double n = double(positions_);
  m.mean_nll = nll_sum_ / n;
  m.perplexity = std::exp(m.mean_nll);
  // KL is non-negative; rounding makes the teacher's own KL a tiny negative (-1.8e-14).
  m.kl_to_teacher = std::max(0.0, kl_sum_ / n);
  m.top1_agreement = double(agree_) / n;
  m.top1_accuracy = double(correct_) / n;
  return m;
}

}  // namespace distill
