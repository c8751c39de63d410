// Model provenance by output agreement (Nikolic, Baluta & Saxena 2025, "Model Provenance Testing
// for Large Language Models"): a suspect S derives from a candidate A when, on the same prompts,
// S's outputs agree with A's more often than with the outputs of control models that are known
// to be unrelated to S. The paper measures agreement as the share of prompts on which two models
// give the same greedy next token, compares the candidate's rate with each control's by a
// two-proportion z-test, and controls the error over several tests with Holm-Bonferroni.
//
// What this file does (docs/fingerprint.md has the argument):
//  - S continues every prompt greedily for `tokens` tokens (with tokens = 1: the paper's greedy
//    next token); every candidate and control is then teacher-forced on prompt + S's
//    continuation, and a position agrees when the model's top-1 token is S's token. The contexts
//    are identical for all models, so every position is a like-for-like comparison, and S is
//    only ever asked for generations (a black box); candidates and controls need logits.
//  - Per (candidate A, control C): the exact one-sided sign test over prompts of
//    d_i = agree_i(A) - agree_i(C) (McNemar's exact test when tokens = 1). Prompts are the
//    independent units; positions inside one continuation are not independent, so they are
//    never counted as separate trials.
//  - Per candidate: H0 "S agrees with A no more than with some control" is a union over the
//    controls, so the intersection-union test's p-value is the largest control-wise p-value.
//  - Across candidates: Holm-Bonferroni adjusted p-values; "S derives from A" when adjusted
//    p <= alpha (family-wise error <= alpha over the candidates).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill {

// The exact one-sided sign test of paired counts: does `a` exceed `b` more often than not?
struct SignTest {
  int64_t wins = 0;    // prompts with a[i] > b[i]
  int64_t losses = 0;  // prompts with a[i] < b[i]
  int64_t ties = 0;    // prompts with a[i] == b[i] (no information about the direction; dropped)
  double z = 0.0;      // (wins - n/2) / sqrt(n/4), n = wins + losses (0 when n = 0); shown only
  double log_p = 0.0;  // ln P(X >= wins), X ~ Binomial(wins + losses, 1/2): exact
  double p_value = 1.0;
};
// a and b: agreements per prompt (same length). Errors on a length mismatch.
SignTest sign_test(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

// One reference model's agreement with the suspect.
struct ModelAgreement {
  std::string dir;                  // model directory (or a label, in tests)
  std::vector<int32_t> per_prompt;  // positions where its top-1 is the suspect's token, per prompt
  int64_t agreements = 0;           // sum of per_prompt
  int64_t compared = 0;             // positions compared (prompts x tokens)
  double rate() const { return compared ? double(agreements) / double(compared) : 0.0; }
};

struct ControlComparison {
  std::string control;  // control's dir
  SignTest test;        // candidate vs this control
};

struct CandidateVerdict {
  std::string candidate;                 // candidate's dir
  std::vector<ControlComparison> controls;
  std::string weakest_control;           // the control with the largest p (decides p_value)
  double p_value = 1.0;                  // intersection-union: max over controls
  double log_p = 0.0;                    // ln p_value (exact far below 1e-300)
  double adjusted_p = 1.0;               // Holm-Bonferroni over the candidates
  bool derived = false;                  // adjusted_p <= alpha
  // Set when the candidate predicts the real text significantly better than a control (when
  // references are given): agreement then also measures capability, and a derived verdict may
  // be a false positive (docs/fingerprint.md).
  std::string warning;
};

// Candidate vs control on the real text: is the candidate the better predictor?
struct CapabilityCheck {
  std::string candidate, control;
  SignTest test;  // per-prompt top-1 accuracy on the references, candidate vs control
};

struct FingerprintReport {
  std::string suspect;
  std::string tokenizer_fingerprint;
  int64_t prompts = 0;
  int tokens_per_prompt = 0;
  int64_t compared_tokens = 0;  // prompts x tokens_per_prompt, per model
  double alpha = 0.05;
  std::string prompt_source;    // "<file>" or "corpus <files> (held-out tail, seed N)"
  std::vector<ModelAgreement> candidates, controls;
  std::vector<CandidateVerdict> verdicts;  // one per candidate, same order
  // With references: every candidate's and control's top-1 accuracy on the real continuation
  // of the prompts, and the candidate-vs-control tests that set the verdicts' warnings.
  std::vector<ModelAgreement> candidate_accuracy, control_accuracy;
  std::vector<CapabilityCheck> capability;
};

// Fills report.capability and the verdicts' warnings from candidate_accuracy and
// control_accuracy (a warning when a candidate beats a control at p <= alpha).
void check_capability(FingerprintReport& report);

// The statistics alone, on agreement counts measured elsewhere (all per_prompt vectors the same
// length). Fills report.verdicts; errors when there is no candidate or no control.
void fingerprint_decide(FingerprintReport& report);

struct FingerprintOptions {
  std::string suspect;                  // model directory of the suspect
  std::vector<std::string> candidates;  // candidate parents (model directories)
  std::vector<std::string> controls;    // models known to be unrelated to the suspect
  std::vector<std::string> prompts;     // prompt texts (non-empty)
  std::string prompt_source;            // recorded in the report
  // Optional, one per prompt: the real text that follows it (corpus prompts). Every candidate
  // and control is also scored on it (top-1 accuracy over `tokens` tokens) to check that the
  // controls are as capable as the candidates.
  std::vector<std::string> references;
  int tokens = 32;                      // greedy tokens of the suspect per prompt
  double alpha = 0.05;                  // family-wise level over the candidates
  int batch = 16;                       // prompts decoded (suspect) or scored together
};

// stage: "suspect" or a model dir; done/total prompts of that stage.
using FingerprintProgress = std::function<void(const std::string& stage, int done, int total)>;

// Loads every model, checks they share the suspect's tokenizer (an error names the model
// directory and both fingerprints) and that prompt + tokens fit every model's context, measures
// the agreements and decides. A model directory listed twice is an error.
FingerprintReport run_fingerprint(const FingerprintOptions& options,
                                  const FingerprintProgress& progress = {});

// Everything in the report: counts, per-prompt agreements, tests, raw and adjusted p.
nlohmann::json fingerprint_json(const FingerprintReport& report);

}  // namespace distill
