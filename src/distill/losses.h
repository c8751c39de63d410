// Knowledge-distillation losses on student logits against a teacher distribution, per position,
// with their gradients with respect to the student logits.
//
// Notation: q = softmax(z / T) is the student's distribution (z its logits), p the teacher's at
// the same temperature T. Every KD term is multiplied by T^2 (Hinton et al. 2015) so that its
// gradient scale does not shrink as T grows; cross-entropy on the sampled token is not.
//   kl     forward KL(p || q)                           (Hinton; DistillKit, TRL default)
//   rkl    reverse KL(q || p)                            (MiniLLM, Gu et al. 2024)
//   jsd    beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
//          (generalized JSD of GKD, Agarwal et al. 2024, TRL's convention; beta in (0, 1):
//          use kl / rkl for the end points)
//   tvd    0.5 * sum |p - q|
//   skl    skew forward KL(p || lambda p + (1 - lambda) q)   (DistiLLM, Ko et al. 2024)
//   srkl   skew reverse KL(q || lambda q + (1 - lambda) p)
//   ce     -log softmax(z)[target] on the sampled/reference token (T = 1, no T^2)
//
// Teachers come dense (all V logits: an online teacher) or sparse (offline shards: the top-k
// token ids with their log-probabilities at T = 1, and the probability mass outside them). For
// sparse teachers the tail is handled by a stated rule:
//   TailRule::Bucket (default): the distributions are compared over k + 1 categories, the k
//     teacher tokens and one "everything else" bucket holding the teacher's tail mass and the
//     student's probability outside the k tokens. Exact for that partition of the vocabulary.
//   TailRule::Ignore: both distributions are restricted to the k tokens and renormalized
//     (DistillKit's sparse rule); the tail mass is dropped.
// With T != 1 the teacher's top-k log-probabilities are divided by T and renormalized over the
// categories, the tail bucket tempered as if it were one token (exact at T = 1).
//
// Normalization: per-position losses are weighted by a mask (0 = not a target, e.g. a prompt
// token) and the total is divided by the number of target positions of the whole optimizer step
// (passed in), so the loss of a token does not depend on the length of its sequence or on how
// the step's tokens are split into micro-batches; a batch with no target tokens has loss 0 and
// zero gradient.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace distill {

enum class KdLossKind { CE, KL, RKL, JSD, TVD, SKL, SRKL };

struct KdTerm {
  KdLossKind kind = KdLossKind::KL;
  float weight = 1.0f;
  float param = 0.5f;  // beta for jsd, lambda for skl/srkl (default 0.1 for those)
};

enum class TailRule { Bucket, Ignore };

struct KdLossSpec {
  std::vector<KdTerm> terms = {KdTerm{}};
  float temperature = 1.0f;
  TailRule tail = TailRule::Bucket;

  // Parses "kl", "kl=0.5,ce=0.5", "jsd:0.9=1", "skl:0.1=0.7,ce=0.3" (name[:param][=weight]).
  // Unknown names, bad numbers, out-of-range params are errors naming the term.
  static KdLossSpec parse(const std::string& text, float temperature = 1.0f,
                          TailRule tail = TailRule::Bucket);
  bool needs_teacher() const;  // any term other than ce
  std::string describe() const;
};

const char* kd_loss_name(KdLossKind kind);

// A sparse teacher distribution for one position: k token ids with log-probabilities (T = 1)
// and the probability mass outside them (>= 0).
struct SparseTeacherRow {
  const int32_t* ids;
  const float* logprobs;
  int k;
  float tail_mass;
};

struct KdLossResult {
  double loss = 0.0;            // sum over positions of weight * per-position loss / normalizer
  double per_term[8] = {};      // the same split by term (indexed by KdLossKind)
  int64_t positions = 0;        // positions with weight > 0
};

// Dense teacher. student_logits (N,V); teacher_logits (N,V); targets (N) the sampled/reference
// token for ce (< 0: none); weights (N) 0/1 mask (or any non-negative weights); normalizer:
// total target positions of the optimizer step (> 0, else nothing is computed).
// dlogits (N,V), when non-null, ACCUMULATES d(loss)/d(student logits). dlogits may not alias.
KdLossResult kd_loss_dense(const KdLossSpec& spec, const float* student_logits,
                           const float* teacher_logits, const int32_t* targets,
                           const float* weights, int N, int V, double normalizer, float* dlogits);

// Sparse teacher: one SparseTeacherRow per position (rows with k == 0 count only for ce).
KdLossResult kd_loss_sparse(const KdLossSpec& spec, const float* student_logits,
                            const SparseTeacherRow* teacher, const int32_t* targets,
                            const float* weights, int N, int V, double normalizer,
                            float* dlogits);

}  // namespace distill
