#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace distill {

int32_t sample_token(const float* logits, int V, const SamplingOptions& o, Rng& rng) {
  if (o.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  const int k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::vector<double> probs(k);
  const double mx = logits[order[0]];
  double sum = 0.0;
  for (int i = 0; i < k; i++) sum += probs[i] = std::exp((logits[order[i]] - mx) / o.temperature);
  int keep = k;
  if (o.min_p > 0.0f) {  // probs[0] is the largest
    while (keep > 1 && probs[keep - 1] < o.min_p * probs[0]) keep--;
  }
  if (o.top_p < 1.0f) {
    double mass = 0.0;
    for (int i = 0; i < k; i++) {
      mass += probs[i] / sum;
      if (i + 1 >= keep) break;
      if (mass >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (int i = 0; i < keep; i++) total += probs[i];
  double r = rng.uniform() * total;
  for (int i = 0; i < keep; i++) {
    r -= probs[i];
    if (r < 0.0) return order[i];
  }
  return order[keep - 1];
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
