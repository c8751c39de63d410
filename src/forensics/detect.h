// Watermark detection: in text (`distill detect text`) and in a model trained on watermarked text
// (`distill detect model`, Sander et al. 2024, "Watermarking Makes Language Models Radioactive").
//
// Everything reduces to a list of observations: a token at a position of a token sequence (the
// text's own token, a suspect's top-1 prediction there, or a suspect's generated token). Each one
// becomes a (seed, token) pair under the key (watermark.h); pairs are scored once each across the
// whole test (dedup), optionally skipping pairs the suspect could have copied from its input, and
// the count of green pairs (Kirchenbauer) or the sum of -ln(1 - r) (Aaronson) gives an exact
// p-value. Because the observations do not depend on the key, a calibration run rescored under
// many random keys costs hashing only, and shows whether the p-values are uniform under the null.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "forensics/watermark.h"
#include "model/model.h"

namespace distill {

// A token sequence and the part of it that is scored: positions >= first_scored.
struct TokenText {
  std::string id;
  std::vector<int32_t> ids;
  int32_t first_scored = 0;  // e.g. the prompt length: only the completion is scored
};

struct Observation {
  int32_t text = 0;   // index into ObservationSet::texts
  int32_t pos = 0;    // the position in that text the token stands at
  int32_t token = 0;  // the token scored there (the text's own, or a suspect's)
};

// Rules that keep a test's null hypothesis true.
struct ScoreRules {
  bool dedup = true;  // score each (seed, token) pair once across the test
  // Skip a pair whose window occurs in the text before first_scored (closed mode: the suspect
  // may copy n-grams of its watermarked prompt).
  bool skip_prompt_windows = false;
  // Skip a pair that already occurs, as (window, token), earlier in its own text (open mode: the
  // suspect sees the watermarked text and may copy it).
  bool skip_context_pairs = false;
  // When non-empty: score only pairs whose window occurs in these texts (the watermarked
  // training data; left-hash only).
  const std::vector<std::vector<int32_t>>* filter_texts = nullptr;
};

struct ObservationSet {
  std::vector<TokenText> texts;
  std::vector<Observation> obs;
};

struct DetectionResult {
  std::string test;          // "binomial tail, gamma=0.25" or "gamma tail Gamma(T,1)"
  int64_t observations = 0;  // tokens offered
  int64_t too_early = 0;     // fewer previous tokens than the window needs
  int64_t duplicates = 0;    // pairs already scored (dedup)
  int64_t prompt_skipped = 0, context_skipped = 0, filtered = 0;
  int64_t scored = 0;        // T: distinct pairs scored
  int64_t green = 0;         // Kirchenbauer: G
  double score = 0.0;        // Kirchenbauer: G; Aaronson: sum of -ln(1 - r)
  double expected = 0.0;     // its mean under the null (gamma T, or T)
  double z = 0.0;            // (score - expected) / null standard deviation
  double ln_p = 0.0;         // ln of the exact one-sided p-value (0 when nothing was scored)
  double log10_p() const { return ln_p * 0.43429448190325182765; }
};

DetectionResult score_observations(const WatermarkKey& key, const ObservationSet& set,
                                   const ScoreRules& rules);

// The observations of text detection: every scored position with the text's own token.
ObservationSet text_observations(std::vector<TokenText> texts);

// Open model: the suspect reads each text; its top-1 prediction at every scored position is the
// observation. Texts longer than the model's context are read in consecutive windows.
// vocab_limit > 0: the prediction is among the ids below it (the suspect's tokenizer's, when its
// vocabulary is padded past it: the padding has no text and cannot be a token of any output).
ObservationSet open_model_observations(
    Model& suspect, std::vector<TokenText> texts,
    const std::function<void(int64_t done, int64_t total)>& progress = {}, int vocab_limit = 0);

// Closed model: the suspect completes each prompt (sampling as given); the generated tokens are
// the observations (their text is prompt + completion, first_scored = the prompt length).
struct ClosedModelOptions {
  int max_tokens = 128;
  float temperature = 1.0f;
  uint64_t seed = 0;
  int batch = 8;
  std::vector<int32_t> stop_ids;
  int vocab_limit = 0;  // > 0: ids below it only are sampled (as open_model_observations')
};
ObservationSet closed_model_observations(
    Model& suspect, const std::vector<TokenText>& prompts, const ClosedModelOptions& options,
    const std::function<void(int64_t done, int64_t total)>& progress = {});

// The same test under `keys` random keys (the secret derived from seed + i): the p-values, and
// how uniform they are.
struct Calibration {
  std::vector<double> p_values;
  int64_t below_001 = 0, below_005 = 0;  // p <= 0.01, p <= 0.05
  double ks_d = 0.0, ks_p = 1.0;         // Kolmogorov-Smirnov against Uniform(0, 1)
  double mean_scored = 0.0;              // pairs scored per test
};
Calibration calibrate(const WatermarkKey& key, const ObservationSet& set, const ScoreRules& rules,
                      int keys, uint64_t seed);

// Inputs: a dataset directory (records' tokens; the completion is scored), a JSONL file (fields
// "prompt" optional, and "completion" or "text"; optional "id"), or a plain text file (one text,
// or one per line with `per_line`). Text goes through `encode`. Errors name the file and line.
std::vector<TokenText> read_texts(const std::string& path,
                                  const std::function<std::vector<int32_t>(const std::string&)>& encode,
                                  bool per_line);

// Prompts for the closed-model test: a prompt file as `distill generate` reads it ("prompt"
// lines; chat "messages" are refused) or plain text with one prompt per line. first_scored is
// the prompt's length.
std::vector<TokenText> read_prompts(const std::string& path,
                                    const std::function<std::vector<int32_t>(const std::string&)>& encode);

}  // namespace distill
