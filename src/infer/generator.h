// Batched generation with a KV cache: many prompts at once, sampling per request with its own
// seed, per-token top-k log-probabilities, stop tokens and a stop predicate (stop strings), and a
// logits-processor hook (watermarks plug in there). Also teacher-forced scoring of given text.
// The stepping (admission into free slots, prefill riding with decode rows, eviction) is
// BatchDecoder's (infer/batch_decoder.h): a finished sequence's slot takes the next prompt at the
// next step, as it does in the serving engine.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "infer/batch_decoder.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "model/model.h"

namespace distill {

// Changes the logits of request `request` (index into the prompts) before sampling; `context` is
// the prompt followed by the tokens generated so far.
class LogitsProcessor {
 public:
  virtual ~LogitsProcessor() = default;
  virtual void process(int request, const std::vector<int32_t>& context, float* logits,
                       int V) = 0;
};

struct GenerateOptions {
  SamplingOptions sampling;
  int max_tokens = 128;              // new tokens per request
  uint64_t seed = 0;                 // request i samples with seed + i ...
  std::vector<uint64_t> request_seeds;  // ... or with request_seeds[i] when given
  int top_logprobs = 0;              // top-k log-probabilities per token (0: none), over the ids
                                     // below sampling.vocab_limit when it is set
  std::vector<int32_t> stop_ids;     // e.g. EOS; the stop token is kept in the output
  // Called after each token with the tokens generated so far; true stops the request (stop
  // strings are checked here by the caller, who has the tokenizer).
  std::function<bool(int request, const std::vector<int32_t>& generated)> stop;
};

// Log-probabilities of one position under the model's raw distribution (T = 1, before any
// logits processor): the chosen token's, the top k, and the mass outside the top k.
struct TokenLogprobs {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  float tail_mass = 0.0f;
};

struct Generation {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;  // one per token when top_logprobs > 0 (or always for id)
  std::string finish_reason;            // "stop" or "length"
};

// Top-k log-probabilities of a logits row over ids [0, V): a caller with a vocabulary padded past
// its tokenizer's passes the tokenizer's size, so the padding (no text) is neither listed nor in
// the normaliser. A chosen id outside [0, V) gets -inf.
TokenLogprobs top_logprobs(const float* logits, int V, int k, int32_t chosen);

class Generator {
 public:
  // max_batch sequences decode together; context is the longest prompt + generation (the KV
  // cache holds context - 1 positions: the last token is never run).
  // kv: the cache's storage type, block size and pool (the default pool never makes a prompt
  // wait).
  Generator(Model& model, int max_batch, int context, const KvCacheOptions& kv = {});

  std::vector<Generation> generate(const std::vector<std::vector<int32_t>>& prompts,
                                   const GenerateOptions& options,
                                   LogitsProcessor* processor = nullptr,
                                   const std::function<void(int done, int total, int64_t tokens)>&
                                       progress = {});

  // Teacher-forced: for positions 1..n-1 of `ids`, the log-probabilities of ids[t] given
  // ids[0..t-1], with the top k. Returns n-1 entries. vocab_limit > 0: over ids below it only
  // (the tokenizer's vocabulary when the model's is padded past it; see top_logprobs).
  std::vector<TokenLogprobs> score(const std::vector<int32_t>& ids, int top_k,
                                   int vocab_limit = 0);

 private:
  Model& model_;
  int context_;
  BatchDecoder decoder_;
};

}  // namespace distill
