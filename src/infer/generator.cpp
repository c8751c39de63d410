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
  if (chosen >= 0) out.logprob = float(double(logits[chosen]) - lse);
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

Generator::Generator(Model& model, int max_batch, int context)
    : model_(model), max_batch_(max_batch), context_(context) {
  if (max_batch <= 0) throw Error("batch size must be positive");
  if (context < 2) throw Error("context must hold a prompt token and a new one, got {}", context);
  // A sequence of `context` tokens feeds only its first context - 1 through the model (the last
  // one is sampled, never run): so a gpt2 model of n_positions P can complete to P + 1 tokens.
  cache_ = model.make_cache(max_batch, context - 1);
}

std::vector<Generation> Generator::generate(
    const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& o,
    LogitsProcessor* processor, const std::function<void(int, int, int64_t)>& progress) {
  const int V = model_.config().vocab_size;
  const int n = int(prompts.size());
  for (int i = 0; i < n; i++) {
    if (prompts[i].empty()) throw Error("prompt {} is empty", i);
    if (int(prompts[i].size()) >= context_)
      throw Error("prompt {} has {} tokens: no room to generate within the context of {}", i,
                  prompts[i].size(), context_);
  }
  std::vector<Generation> out(n);
  struct Active {
    int request = -1;
    std::vector<int32_t> context;
    Rng rng;
    bool prefilled = false;
  };
  std::vector<Active> slots(max_batch_);
  int next = 0, done = 0;
  int64_t tokens = 0;
  InferBatch batch;
  std::vector<int> row_slot;  // slot of each logits row
  std::vector<float> raw;
  while (done < n) {
    // Admit waiting prompts into free slots.
    for (int s = 0; s < max_batch_ && next < n; s++) {
      if (slots[s].request >= 0) continue;
      slots[s].request = next;
      slots[s].context = prompts[next];
      slots[s].rng.reseed(o.request_seeds.empty() ? o.seed + uint64_t(next)
                                                  : o.request_seeds.at(size_t(next)));
      slots[s].prefilled = false;
      cache_->reset(s);
      next++;
    }
    batch.clear();
    row_slot.clear();
    for (int s = 0; s < max_batch_; s++) {
      Active& a = slots[s];
      if (a.request < 0) continue;
      if (!a.prefilled) {
        for (size_t t = 0; t < a.context.size(); t++)
          batch.add(a.context[t], s, int(t), t + 1 == a.context.size());
        a.prefilled = true;
      } else {
        batch.add(a.context.back(), s, int(a.context.size()) - 1, true);
      }
      row_slot.push_back(s);
    }
    float* logits = model_.forward_rows(batch, *cache_);
    for (size_t m = 0; m < row_slot.size(); m++) {
      Active& a = slots[row_slot[m]];
      Generation& g = out[a.request];
      float* row = logits + m * size_t(V);
      // Log-probabilities come from the raw distribution, before any processor changes it.
      if (o.top_logprobs > 0 && processor) raw.assign(row, row + V);
      if (processor) processor->process(a.request, a.context, row, V);
      const int32_t tok = sample_token(row, V, o.sampling, a.rng);
      if (o.top_logprobs > 0)
        g.logprobs.push_back(top_logprobs(processor ? raw.data() : row, V, o.top_logprobs, tok));
      g.tokens.push_back(tok);
      a.context.push_back(tok);
      tokens++;
      const bool stop_token = std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) != o.stop_ids.end();
      const bool stop_pred = o.stop && o.stop(a.request, g.tokens);
      const bool full = int(g.tokens.size()) >= o.max_tokens || int(a.context.size()) >= context_;
      if (stop_token || stop_pred || full) {
        g.finish_reason = stop_token || stop_pred ? "stop" : "length";
        a.request = -1;
        done++;
        if (progress) progress(done, n, tokens);
      }
    }
  }
  return out;
}

std::vector<TokenLogprobs> Generator::score(const std::vector<int32_t>& ids, int top_k) {
  if (ids.size() < 2) return {};
  if (int(ids.size()) > context_)
    throw Error("text of {} tokens exceeds the context of {}", ids.size(), context_);
  const int V = model_.config().vocab_size;
  InferBatch batch;
  cache_->reset(0);
  for (size_t t = 0; t + 1 < ids.size(); t++) batch.add(ids[t], 0, int(t), true);
  const float* logits = model_.forward_rows(batch, *cache_);
  std::vector<TokenLogprobs> out;
  for (size_t t = 0; t + 1 < ids.size(); t++)
    out.push_back(top_logprobs(logits + t * size_t(V), V, top_k, ids[t + 1]));
  return out;
}

}  // namespace distill
