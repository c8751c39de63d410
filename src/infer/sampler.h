// Sampling the next token from logits, and a plain generation loop.
// The generation loop recomputes the whole window for every new token (no KV cache yet: the
// batched, cached engine is the inference issue's work); fine for demo-sized models.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "model/model.h"

namespace distill {

struct SamplingOptions {
  float temperature = 0.8f;  // 0: greedy
  int top_k = 0;             // keep the k most likely tokens (0: all)
  float top_p = 1.0f;        // keep the smallest set with this much probability mass
  float min_p = 0.0f;        // keep tokens with probability >= min_p * the top probability
  int vocab_limit = 0;       // > 0: only ids below it are sampled (a model's vocabulary padded
                             // past its tokenizer's: those ids have no text)
};

// The tokens sampling at temperature > 0 can pick, with unnormalised weights
// exp((logit - max) / temperature) (the most likely token weighs 1), in no promised order. The
// cuts are those of a ranking by logit (ties: lower id): top_k first; min_p and top_p then cut
// within it (top_p's mass is relative to what top_k kept); at least one token is kept. Only the
// tokens near the cut are ranked (weights bucketed by 1/16 nat), not the whole vocabulary.
struct SamplingCandidates {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};
SamplingCandidates sampling_candidates(const float* logits, int V, const SamplingOptions& options);

// Picks a token from logits (V): the most likely at temperature 0, else one of
// sampling_candidates with probability proportional to its weight (one rng.uniform() draw).
// Deterministic given the rng state.
int32_t sample_token(const float* logits, int V, const SamplingOptions& options, Rng& rng);

// Appends up to max_new_tokens tokens to `prompt` (which must be non-empty) and returns the new
// ones. The context is cropped to the model's last `context` tokens.
std::vector<int32_t> generate(Model& model, std::vector<int32_t> prompt, int max_new_tokens,
                              int context, const SamplingOptions& options, Rng& rng);

}  // namespace distill
