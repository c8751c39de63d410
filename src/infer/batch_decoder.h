// Step-wise batched decoding over a paged KV cache: the one loop both Generator::generate and the
// serving engine drive. Sequences join (`admit`) and leave (`finish`) between steps; each `step`
// runs one forward_rows over every live sequence (a chunk of its prompt while prefilling, else
// its last token) and samples one token for every sequence whose prompt is all in. Prompt rows
// of a newly admitted sequence ride in the same forward as the others' decode rows, so nobody
// waits for a batch to drain before joining.
//
// Admission reserves the KV blocks a sequence can grow to (prompt + max_tokens, capped by the
// context): an admitted sequence never runs out of cache, and when the pool cannot promise the
// blocks `admit` says no and the caller retries after an eviction.
//
// Prefill chunking: a sequence runs at most `prefill_chunk` prompt rows per step, so a long
// prompt is spread over several steps instead of stalling everyone else's next token for its
// whole prefill. The chunk boundaries depend on the sequence alone (not on what else is in the
// batch), so its outputs do not depend on who else is running, as long as each step has at most
// kMatmulRowsMax rows: a larger step's matmuls go through oneDNN, whose sums are ordered otherwise
// (docs/serve.md).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "model/model.h"

namespace distill {

class LogitsProcessor;  // infer/generator.h

struct DecoderOptions {
  KvCacheOptions kv;      // cache storage type, block size, pool size
  int prefill_chunk = 0;  // prompt rows per sequence per step (0: the whole prompt at once)
};

struct DecodeRequest {
  int id = 0;                   // the caller's handle: given to the logits processor, reported back
  std::vector<int32_t> prompt;  // non-empty, shorter than the context
  int max_tokens = 1;           // new tokens at most (>= 1)
  SamplingOptions sampling;
  uint64_t seed = 0;            // this sequence's sampling stream
  bool raw_logits = false;      // report each sampled row's logits before the processor
};

// One token sampled in a step.
struct DecodedToken {
  int id = 0;                // DecodeRequest::id
  int32_t token = 0;
  const float* raw = nullptr;  // (V) logits before the processor, when raw_logits; valid until
                               // the next step
  int generated = 0;           // tokens of this sequence so far, this one included
  bool at_limit = false;       // max_tokens reached or the context full: finish it now
};

class BatchDecoder {
 public:
  // max_batch: sequences decoded together; context: prompt + generation per sequence (the cache
  // holds context - 1 positions: the last token is sampled, never run).
  BatchDecoder(Model& model, int max_batch, int context, const DecoderOptions& options = {});

  // True when the sequence got a slot and its KV blocks; false when none is free now (finish
  // others and retry). An Error when it could never run: an empty prompt, no room within the
  // context, or more KV blocks than the whole pool.
  bool admit(DecodeRequest request);
  // Which sequences a step runs: every live one, or only those whose prompt's last chunk is due
  // (they sample their first token in it; the serving engine runs such a step before the next
  // full one so a new request's first token does not wait for everyone's next token).
  enum class Rows { kAll, kFirstTokens };
  // One forward over the live sequences `rows` picks; the tokens sampled, in slot order. Empty
  // when nothing is live. The processor sees each sampled row (request = id, context = prompt +
  // generated). Which step a chunk runs in does not change its rows or positions.
  const std::vector<DecodedToken>& step(LogitsProcessor* processor = nullptr,
                                        Rows rows = Rows::kAll);
  // Live sequences whose next chunk is their prompt's last (kFirstTokens would run them).
  int first_tokens_due() const;
  // Evicts the sequence: its slot and KV blocks are free for the next admit.
  void finish(int id);
  // Evicts every sequence.
  void clear();

  int live() const { return live_; }
  int max_batch() const { return int(slots_.size()); }
  int context() const { return context_; }
  int prefill_chunk() const { return prefill_chunk_; }
  const std::vector<int32_t>& context_of(int id) const;
  KvCache& cache() { return *cache_; }
  // Rows the last step ran: prompt rows (prefill) and decode rows.
  int last_prompt_rows() const { return last_prompt_rows_; }
  int last_decode_rows() const { return last_decode_rows_; }

 private:
  struct Slot {
    bool live = false;
    DecodeRequest request;
    std::vector<int32_t> context;  // prompt, then the tokens generated
    int prefilled = 0;             // prompt positions run so far
    int generated = 0;
    Rng rng;
  };
  int slot_of(int id) const;

  Model& model_;
  int context_;
  int prefill_chunk_;
  std::unique_ptr<KvCache> cache_;
  std::vector<Slot> slots_;
  int live_ = 0;
  InferBatch batch_;
  std::vector<int> row_slot_;  // slot of each logits row of the step
  std::vector<float> raw_;     // (rows, V) raw logits of the rows that asked for them
  std::vector<DecodedToken> out_;
  int last_prompt_rows_ = 0, last_decode_rows_ = 0;
};

}  // namespace distill
