#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "kernels/vecmath.h"

namespace distill {

namespace {

// The order sampling ranks tokens in: higher logit first, ties by lower id.
struct Ranked {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  }
};

}  // namespace

SamplingCandidates sampling_candidates(const float* logits, int V, const SamplingOptions& o) {
  if (V <= 0) throw Error("sampling needs at least one logit");
  SamplingCandidates c;
  const float mx = *std::max_element(logits, logits + V);
  const float inv_t = 1.0f / o.temperature;
  if (!(inv_t < std::numeric_limits<float>::infinity())) {  // a temperature too small to divide by
    c.ids.push_back(int32_t(std::max_element(logits, logits + V) - logits));
    c.weights.push_back(1.0f);
    return c;
  }
  std::vector<float> w(V);
#pragma omp simd
  for (int i = 0; i < V; i++) w[i] = fast_exp((logits[i] - mx) * inv_t);
  const bool top_k = o.top_k > 0 && o.top_k < V;
  if (!top_k && o.top_p >= 1.0f) {
    // Every token, or those min_p keeps (the largest weight is 1): no ranking needed.
    const float floor = std::min(1.0f, std::max(0.0f, o.min_p));
    for (int i = 0; i < V; i++)
      if (w[i] >= floor) {
        c.ids.push_back(i);
        c.weights.push_back(w[i]);
      }
    return c;
  }
  // Rank only as many tokens as the cut needs: top_k's, or for top_p a prefix grown until it
  // holds top_p of the mass (most distributions need a few dozen tokens, not the vocabulary).
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  const Ranked by_rank{logits};
  const int limit = top_k ? o.top_k : V;
  if (top_k) std::nth_element(order.begin(), order.begin() + limit, order.end(), by_rank);
  double mass = 0.0;  // what top_p is a fraction of: the tokens top_k keeps, or all
  for (int i = 0; i < limit; i++) mass += w[order[i]];
  int ranked = 0;  // order[0, ranked) is sorted
  const float floor = o.min_p > 0.0f ? o.min_p : 0.0f;  // times the top weight, 1
  double prefix = 0.0;
  for (int i = 0; i < limit; i++) {
    if (i == ranked) {
      const int more = std::min(limit, std::max(64, ranked * 8));
      std::partial_sort(order.begin() + ranked, order.begin() + more, order.begin() + limit,
                        by_rank);
      ranked = more;
    }
    const int32_t t = order[i];
    if (i > 0 && w[t] < floor) break;
    c.ids.push_back(t);
    c.weights.push_back(w[t]);
    prefix += w[t];
    if (o.top_p < 1.0f && prefix >= o.top_p * mass) break;
  }
  return c;
}

int32_t sample_token(const float* logits, int V, const SamplingOptions& o, Rng& rng) {
  if (o.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  const SamplingCandidates c = sampling_candidates(logits, V, o);
  double total = 0.0;
  for (float x : c.weights) total += x;
  double r = rng.uniform() * total;
  for (size_t i = 0; i < c.ids.size(); i++) {
    r -= c.weights[i];
    if (r < 0.0) return c.ids[i];
  }
  return c.ids.back();
}

std::vector<int32_t> generate(Model& model, std::vector<int32_t> tokens, int max_new_tokens,
                              int context, const SamplingOptions& options, Rng& rng) {
  if (tokens.empty()) throw Error("generation needs a non-empty prompt");
  const int V = model.config().vocab_size;
  std::vector<int32_t> out;
  for (int i = 0; i < max_new_tokens; i++) {
    const int T = std::min<int>(int(tokens.size()), context);
    const int32_t* window = tokens.data() + tokens.size() - T;
    const float* logits = model.forward(window, 1, T);
    const int32_t next = sample_token(logits + size_t(T - 1) * V, V, options, rng);
    tokens.push_back(next);
    out.push_back(next);
    if (next == model.config().eos_token_id) break;
  }
  return out;
}

}  // namespace distill
