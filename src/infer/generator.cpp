#include "infer/generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace distill {

TokenLogprobs top_logprobs(const float* logits, int V, int k, int32_t chosen) {
  double mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = std::max(mx, double(logits[i]));
  double sum = 0.0;
  for (int i = 0; i < V; i++) sum += std::exp(double(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprobs out;
  out.id = chosen;
  if (chosen >= 0) out.logprob = chosen < V ? float(double(logits[chosen]) - lse) : -INFINITY;
  k = std::min(k, V);
  if (k <= 0) return out;
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  double mass = 0.0;
  for (int i = 0; i < k; i++) {
    const double lp = double(logits[idx[i]]) - lse;
    out.top_ids.push_back(idx[i]);
    out.top_logprobs.push_back(float(lp));
    mass += std::exp(lp);
  }
  out.tail_mass = float(std::max(0.0, 1.0 - mass));
  return out;
}

Generator::Generator(Model& model, int max_batch, int context, const KvCacheOptions& kv)
    // A sequence of `context` tokens feeds only its first context - 1 through the model (the last
    // one is sampled, never run): so a gpt2 model of n_positions P can complete to P + 1 tokens.
    : model_(model), context_(context), decoder_(model, max_batch, context, DecoderOptions{kv, 0}) {}

std::vector<Generation> Generator::generate(
    const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& o,
    LogitsProcessor* processor, const std::function<void(int, int, int64_t)>& progress) {
  const int n = int(prompts.size());
  for (int i = 0; i < n; i++) {
    if (prompts[i].empty()) throw Error("prompt {} is empty", i);
    if (int(prompts[i].size()) >= context_)
      throw Error("prompt {} has {} tokens: no room to generate within the context of {}", i,
                  prompts[i].size(), context_);
  }
  std::vector<Generation> out(n);
  decoder_.clear();  // a call that threw leaves nothing behind
  int next = 0, done = 0;
  int64_t tokens = 0;
  while (done < n) {
    // Waiting prompts take free slots (and their KV blocks); prompt i samples with its own seed.
    while (next < n) {
      DecodeRequest r;
      r.id = next;
      r.prompt = prompts[size_t(next)];
      r.max_tokens = std::max(o.max_tokens, 1);  // one token at least, as it always was
      r.sampling = o.sampling;
      r.seed = o.request_seeds.empty() ? o.seed + uint64_t(next) : o.request_seeds.at(size_t(next));
      r.raw_logits = o.top_logprobs > 0;
      if (!decoder_.admit(std::move(r))) break;
      next++;
    }
    DISTILL_CHECK(decoder_.live() > 0);
    // Log-probabilities over the ids sampling can pick (a padded vocabulary's padding is not).
    const int V = o.sampling.vocab_limit > 0
                      ? std::min(model_.config().vocab_size, o.sampling.vocab_limit)
                      : model_.config().vocab_size;
    for (const DecodedToken& d : decoder_.step(processor)) {
      Generation& g = out[size_t(d.id)];
      // Log-probabilities come from the raw distribution, before any processor changes it.
      if (o.top_logprobs > 0) g.logprobs.push_back(top_logprobs(d.raw, V, o.top_logprobs, d.token));
      g.tokens.push_back(d.token);
      tokens++;
      const bool stop_token =
          std::find(o.stop_ids.begin(), o.stop_ids.end(), d.token) != o.stop_ids.end();
      const bool stop_pred = o.stop && o.stop(d.id, g.tokens);
      if (stop_token || stop_pred || d.at_limit) {
        g.finish_reason = stop_token || stop_pred ? "stop" : "length";
        decoder_.finish(d.id);
        done++;
        if (progress) progress(done, n, tokens);
      }
    }
  }
  return out;
}

std::vector<TokenLogprobs> Generator::score(const std::vector<int32_t>& ids, int top_k,
                                            int vocab_limit) {
  if (ids.size() < 2) return {};
  if (int(ids.size()) > context_)
    throw Error("text of {} tokens exceeds the context of {}", ids.size(), context_);
  const int V = model_.config().vocab_size;
  InferBatch batch;
  // Slot 0 of the decoder's cache, between generate calls (nothing is live then).
  decoder_.clear();
  KvCache& cache = decoder_.cache();
  for (size_t t = 0; t + 1 < ids.size(); t++) batch.add(ids[t], 0, int(t), true);
  const float* logits = model_.forward_rows(batch, cache);
  std::vector<TokenLogprobs> out;
  for (size_t t = 0; t + 1 < ids.size(); t++)
    out.push_back(top_logprobs(logits + t * size_t(V),
                               vocab_limit > 0 ? std::min(V, vocab_limit) : V, top_k, ids[t + 1]));
  cache.reset(0);
  return out;
}

}  // namespace distill
