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

// Buffers a thread reuses from token to token: fresh vocabulary-sized vectors per token cost
// more in page faults than the sampling itself (128k tokens: ~2x).
struct Scratch {
  std::vector<float> w;
  std::vector<int32_t> order;
  std::vector<uint16_t> bucket;
  std::vector<double> bucket_mass;
  std::vector<int> bucket_count;
};

void fill_candidates(const float* logits, int V, const SamplingOptions& o, Scratch& scratch,
                     SamplingCandidates& c) {
  if (o.vocab_limit > 0) V = std::min(V, o.vocab_limit);
  if (V <= 0) throw Error("sampling needs at least one logit");
  c.ids.clear();
  c.weights.clear();
  const float mx = *std::max_element(logits, logits + V);
  const float inv_t = 1.0f / o.temperature;
  if (!(inv_t < std::numeric_limits<float>::infinity())) {  // a temperature too small to divide by
    c.ids.push_back(int32_t(std::max_element(logits, logits + V) - logits));
    c.weights.push_back(1.0f);
    return;
  }
  std::vector<float>& w = scratch.w;
  w.resize(size_t(V));
  // Tokens more than 87 nats below the top (masked ones, at -inf, among them) weigh nothing.
#pragma omp simd
  for (int i = 0; i < V; i++) {
    const float x = (logits[i] - mx) * inv_t;
    w[i] = x < -87.0f ? 0.0f : fast_exp(x);
  }
  const bool top_k = o.top_k > 0 && o.top_k < V;
  const float floor = std::min(1.0f, std::max(0.0f, o.min_p));  // times the top weight, 1
  if (!top_k && o.top_p >= 1.0f) {
    // Every token, or those min_p keeps: no ranking needed.
    if (floor == 0.0f) {
      c.ids.resize(size_t(V));
      std::iota(c.ids.begin(), c.ids.end(), 0);
      c.weights.assign(w.begin(), w.end());
      return;
    }
    for (int i = 0; i < V; i++)
      if (w[i] >= floor) {
        c.ids.push_back(i);
        c.weights.push_back(w[i]);
      }
    return;
  }
  // Buckets of 1/16 nat of -log weight, in rank order: one pass finds the bucket the cut falls
  // in, and only the tokens up to it (top_k) or in it (top_p) are ranked, not the vocabulary.
  constexpr int kBuckets = 1024;
  std::vector<uint16_t>& bucket = scratch.bucket;
  bucket.resize(size_t(V));
  std::vector<double>& bmass = scratch.bucket_mass;
  std::vector<int>& bcount = scratch.bucket_count;
  bmass.assign(kBuckets, 0.0);
  bcount.assign(kBuckets, 0);
  for (int i = 0; i < V; i++) {
    const float t = (mx - logits[i]) * inv_t * 16.0f;  // NaN goes to the last bucket
    const int b = t < float(kBuckets - 1) ? int(t) : kBuckets - 1;
    bucket[size_t(i)] = uint16_t(b);
    bmass[size_t(b)] += w[i];
    bcount[size_t(b)]++;
  }
  const Ranked by_rank{logits};
  std::vector<int32_t>& order = scratch.order;
  order.clear();
  double prefix = 0.0;
  if (top_k) {
    // The k most likely, ranked; min_p and top_p (of their mass) cut within them.
    int b = 0;
    for (int cum = 0; b < kBuckets - 1 && cum + bcount[size_t(b)] < o.top_k; b++)
      cum += bcount[size_t(b)];
    for (int i = 0; i < V; i++)
      if (bucket[size_t(i)] <= b) order.push_back(i);
    std::nth_element(order.begin(), order.begin() + o.top_k, order.end(), by_rank);
    order.resize(size_t(o.top_k));
    std::sort(order.begin(), order.end(), by_rank);
    double mass = 0.0;
    for (int32_t t : order) mass += w[t];
    for (int32_t t : order) {
      if (!c.ids.empty() && w[t] < floor) break;
      c.ids.push_back(t);
      c.weights.push_back(w[t]);
      prefix += w[t];
      if (o.top_p < 1.0f && prefix >= o.top_p * mass) break;
    }
    return;
  }
  // top_p: the buckets before the one where the mass reaches top_p are all kept (less what
  // min_p drops: it cuts by weight, so in rank order too); that bucket's tokens are ranked and
  // kept until the mass is reached.
  double mass = 0.0;
  for (double m : bmass) mass += m;
  const double target = o.top_p * mass;
  int b = 0;
  for (double cum = 0.0; b < kBuckets - 1 && cum + bmass[size_t(b)] < target; b++)
    cum += bmass[size_t(b)];
  for (int i = 0; i < V; i++) {
    if (bucket[size_t(i)] < b) {
      if (w[i] >= floor) {
        c.ids.push_back(i);
        c.weights.push_back(w[i]);
        prefix += w[i];
      }
    } else if (bucket[size_t(i)] == b) {
      order.push_back(i);
    }
  }
  std::sort(order.begin(), order.end(), by_rank);
  for (int32_t t : order) {
    if (!c.ids.empty() && w[t] < floor) break;
    c.ids.push_back(t);
    c.weights.push_back(w[t]);
    prefix += w[t];
    if (prefix >= target) break;
  }
}

}  // namespace

SamplingCandidates sampling_candidates(const float* logits, int V, const SamplingOptions& o) {
  thread_local Scratch scratch;
  SamplingCandidates c;
  fill_candidates(logits, V, o, scratch, c);
  return c;
}

int32_t sample_token(const float* logits, int V, const SamplingOptions& o, Rng& rng) {
  if (o.vocab_limit > 0) V = std::min(V, o.vocab_limit);
  if (o.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  thread_local Scratch scratch;
  thread_local SamplingCandidates c;
  fill_candidates(logits, V, o, scratch, c);
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
