// Held-out quality of a model next to its teacher: teacher-forced perplexity, KL(teacher ||
// model) and top-1 agreement with the teacher, measured on the same windows of held-out tokens.
#pragma once
#include <cstdint>
#include <vector>

namespace distill {

// Windows of seq_len + 1 held-out tokens: inputs are the first seq_len, targets the last seq_len
// (the inputs shifted by one), so a window scores seq_len next-token positions.
struct HeldOutWindows {
  int seq_len = 0;
  int64_t count = 0;            // windows
  int64_t source_tokens = 0;    // held-out tokens they were cut from
  std::vector<int32_t> tokens;  // (count, seq_len + 1)
  const int32_t* window(int64_t w) const { return tokens.data() + w * (seq_len + 1); }
};

// Consecutive windows with stride seq_len (each held-out token after the first is a target
// exactly once) while there are at most max_windows of them; otherwise max_windows windows at
// evenly spaced starts covering the whole split (first at 0, last ending at the last token).
// Throws when `tokens` has fewer than seq_len + 1 tokens.
HeldOutWindows make_held_out_windows(const std::vector<int32_t>& tokens, int seq_len,
                                     int max_windows);

struct QualityMetrics {
  int64_t positions = 0;  // next-token positions behind every number below
  int64_t windows = 0;
  double mean_nll = 0.0;        // nats per token (teacher-forced)
  double perplexity = 0.0;      // exp(mean_nll)
  double kl_to_teacher = 0.0;   // mean over positions of KL(teacher || model), nats, T = 1
  double top1_agreement = 0.0;  // fraction of positions where argmax model == argmax teacher
  double top1_accuracy = 0.0;   // fraction where argmax model == the actual next token
};

// Sums per-position metrics over batches; result() averages them.
class QualityAccumulator {
 public:
  // logits (N,V) of the model and teacher_logits (N,V) of the teacher at the same N positions;
  // targets (N) the actual next tokens in [0,V).
  void add(const float* logits, const float* teacher_logits, const int32_t* targets, int N, int V);
  void add_windows(int64_t n) { windows_ += n; }
  QualityMetrics result() const;

 private:
  double nll_sum_ = 0.0, kl_sum_ = 0.0;
  int64_t agree_ = 0, correct_ = 0, positions_ = 0, windows_ = 0;
};

// Index of the largest logit of a row (V); the lowest index among ties.
int32_t argmax_logit(const float* row, int V);
// -log softmax(row)[target], in double precision.
double token_nll(const float* row, int V, int32_t target);

}  // namespace distill
