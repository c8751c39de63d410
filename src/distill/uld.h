// Distillation losses between a teacher and a student that do not share a vocabulary, with their
// gradients with respect to the student logits. Positions are compared in aligned pairs (a
// student row and a teacher row that predict the next token from the same text prefix, see
// distill/token_alignment.h).
//
// Notation as in distill/losses.h: q = softmax(z_s / T) over the student's Vs tokens, p =
// softmax(z_t / T) over the teacher's Vt tokens; both terms are multiplied by T^2.
//   uld  Universal Logit Distillation (Boizard et al. 2024, "Towards Cross-Tokenizer
//        Distillation: the Universal Logit Distillation Loss for LLMs", eq. 5-7): the
//        Wasserstein-1 distance between the two distributions with their probabilities sorted
//        in decreasing order, the shorter vector padded with zeros. Under the paper's cost
//        (every pair of ranks one unit apart) it is sum_r |sort(q)_r - sort(p)_r|. It ignores
//        which token has which probability: a permuted vocabulary costs nothing.
//   xkl  exact-match forward KL: the tokens whose byte strings are identical in both
//        vocabularies are matched one to one; every other student token goes to one "bucket".
//        The teacher's probabilities are mapped onto the matched student tokens and its remaining
//        mass onto the bucket, and KL(p' || q') is taken over that partition (|M| + 1
//        categories). When every student token is matched (e.g. a byte-level student of a BPE
//        teacher) there is no bucket: the teacher's unmatched mass is dropped and p' is
//        renormalized over the matched tokens. The other way round it is a poor target: a
//        byte-level teacher matches all its tokens, gives the bucket (every merged student token)
//        no mass, and so pulls the student towards single bytes (measured on KJV, BPE-512
//        student: held-out perplexity 75 with xkl+ce vs 47 with ce alone after 300 steps).
//   ce   the student's cross-entropy on the next token (T = 1, no T^2), as in losses.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace distill {

// The weights of --loss for cross-tokenizer distillation: "uld=1,ce=1", "xkl", "uld=0.5,xkl=0.5".
struct CrossTokenizerLossSpec {
  double uld = 0.0, xkl = 0.0, ce = 0.0;
  float temperature = 1.0f;

  // name[=weight], comma separated; names uld, xkl, ce. The KD terms of losses.h (kl, rkl, ...)
  // compare distributions token by token and are refused with an error that says so; anything
  // else is an unknown term. Weights must be finite and >= 0, at least one > 0.
  static CrossTokenizerLossSpec parse(const std::string& text, float temperature = 1.0f);
  bool needs_teacher() const { return uld > 0.0 || xkl > 0.0; }
  std::string describe() const;  // e.g. "uld=1,ce=1 T=1"
};

// A student row and a teacher row that predict from the same text prefix.
struct AlignedRow {
  int32_t student;  // row of the (N, Vs) student logits
  int32_t teacher;  // row of the (M, Vt) teacher logits
};

// The one-to-one matching of exact-match distillation.
struct VocabularyMatch {
  int student_vocab = 0, teacher_vocab = 0;
  std::vector<int32_t> student_ids, teacher_ids;  // matched pairs, by increasing student id
  std::vector<int32_t> teacher_of_student;        // (Vs): matched teacher id, or -1 (bucket)
  std::vector<uint8_t> teacher_matched;           // (Vt): 1 if matched

  // Tokens as byte strings by id (distill/token_alignment.h: vocabulary_bytes); an empty string
  // never matches (special tokens). A byte string held by several tokens of one side matches
  // once, through its lowest id.
  static VocabularyMatch exact(const std::vector<std::string>& student_tokens,
                               const std::vector<std::string>& teacher_tokens);
  size_t size() const { return student_ids.size(); }
};

// Losses summed over `rows` (each student row at most once), each multiplied by `scale` (weight
// over the step's normalizer). student_logits (N, Vs) and teacher_logits (M, Vt) row-major.
// dlogits (N, Vs), when non-null, ACCUMULATES d(returned value)/d(student logits). Returns the
// scaled sum.
double uld_loss(const float* student_logits, int Vs, const float* teacher_logits, int Vt,
                const std::vector<AlignedRow>& rows, float temperature, double scale,
                float* dlogits);
double exact_match_kl_loss(const float* student_logits, const float* teacher_logits,
                           const VocabularyMatch& match, const std::vector<AlignedRow>& rows,
                           float temperature, double scale, float* dlogits);

}  // namespace distill
