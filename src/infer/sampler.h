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
};

// Picks a token from logits (V). Deterministic given the rng state.
int32_t sample_token(const float* logits, int V, const SamplingOptions& options, Rng& rng);

// Appends up to max_new_tokens tokens to `prompt` (which must be non-empty) and returns the new
// ones. The context is cropped to the model's last `context` tokens.
std::vector<int32_t> generate(Model& model, std::vector<int32_t> prompt, int max_new_tokens,
                              int context, const SamplingOptions& options, Rng& rng);

}  // namespace distill
