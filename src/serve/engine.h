// The serving engine: a request queue and one engine thread that owns the model and decodes with
// continuous batching (infer/batch_decoder.h). At every decode step the engine admits choices of
// waiting requests into free slots of the running batch (their prompt rows ride in the same
// forward as everyone else's next token, a prompt at most `prefill_chunk` rows per step) and
// evicts finished or cancelled sequences at once, so a request that arrives mid-generation starts
// at the next step instead of waiting for the batch to drain. Admission is first come, first
// served, starts at most one prefill chunk of new prompt rows per step (so same-length requests
// that arrive together do not stay in lockstep), and waits while the batch is full or the paged
// KV cache cannot promise a sequence its blocks (prompt + max_tokens). Per-choice sampling (temperature, top_p, seed), max_tokens, stop
// strings, log-probabilities, the watermark and streaming are applied per sequence through the
// decoder's logits-processor hook and the per-token handling here; a request completes as soon as
// its own choices do.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "forensics/watermark.h"
#include "infer/batch_decoder.h"
#include "infer/generator.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace distill::serve {

struct TopEntry {
  int32_t id = 0;
  float logprob = 0.0f;
};

// One sampled token as the API reports it.
struct TokenInfo {
  int32_t id = 0;
  float logprob = 0.0f;       // under the model's raw distribution (T = 1)
  std::vector<TopEntry> top;  // the top `logprobs` entries, most likely first
};

struct ChoiceSpec {
  std::vector<int32_t> prompt;  // token ids (non-empty, shorter than the context)
  int max_tokens = 16;          // >= 0
  float temperature = 1.0f;     // 0: greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
  int logprobs = -1;              // top entries per token; -1: none
  bool score_prompt = false;      // echo + logprobs: the prompt tokens' log-probabilities too
  std::vector<std::string> stop;  // stop strings (excluded from the text)
};

struct ChoiceResult {
  std::vector<TokenInfo> tokens;         // generated tokens up to the stop (EOS included)
  std::string text;                      // their text, cut before a stop string
  std::string finish_reason;             // "stop" or "length"
  std::vector<TokenInfo> prompt_tokens;  // score_prompt: one per prompt token after the first
};

// Streaming: text that became final for a choice, with the tokens that produced it; the last
// event of a choice has finish_reason set.
struct StreamDelta {
  int choice = 0;
  std::string text;
  std::vector<TokenInfo> tokens;
  std::string finish_reason;
};

class EngineJob {
 public:
  std::vector<ChoiceSpec> choices;
  std::function<void(const StreamDelta&)> on_delta;  // optional; called on the engine thread

  // Blocks until every choice finished (or the engine failed: then throws its error).
  const std::vector<ChoiceResult>& wait();
  void cancel() { cancelled_ = true; }
  // The engine's error when it failed this job ("" otherwise).
  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Engine;
  void finish_choice();
  void fail(const std::string& error);
  std::vector<ChoiceResult> results_;
  int pending_ = 0;
  std::string error_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

struct EngineStats {
  int64_t passes = 0;     // decode steps (one batched forward each: over the live sequences, or
                          // over the new ones' last prompt chunks alone, see Engine::step)
  int64_t sequences = 0;  // choices admitted for decoding
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t queue_depth = 0;  // jobs not yet fully admitted
  int64_t running = 0;      // sequences decoding now
  double busy_seconds = 0.0;
};

// One choice being decoded (engine thread only).
struct EngineSequence {
  std::shared_ptr<EngineJob> job;  // null: this entry is free
  int choice = 0;
  const ChoiceSpec* spec = nullptr;
  std::vector<int32_t> ids;  // generated so far
  std::vector<float> raw;    // the last raw logits row (for log-probabilities)
  size_t sent_text = 0;      // streaming: bytes of text already sent
  size_t sent_tokens = 0;    // streaming: tokens already sent
};

class Engine {
 public:
  // max_batch: sequences decoded together; context: prompt + generation limit per sequence.
  // watermark: every sampled token is watermarked with this key (forensics/watermark.h).
  // decoder: the KV cache (type, block size, pool) and the prefill chunk.
  Engine(Model& model, const Tokenizer& tokenizer, int max_batch, int context,
         size_t max_queue = 256, const WatermarkKey* watermark = nullptr,
         const DecoderOptions& decoder = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job; false when the queue is full (the caller answers 429).
  bool submit(std::shared_ptr<EngineJob> job);
  int context() const { return context_; }
  // KV cache positions of the whole pool: a sequence that can grow past this never runs.
  int pool_positions() const { return pool_positions_; }
  EngineStats stats() const;

 private:
  void run();
  void admit_waiting();
  void drop_cancelled();
  void step();
  // Handles a sampled token of seqs_[id]; true when the choice is done.
  bool on_token(EngineSequence& s, int32_t id, bool at_limit);
  void end_choice(EngineSequence& s, std::string text, const std::string& finish);
  // Fails the job and evicts its live sequences (its other choices are skipped at admission).
  void fail_job(const std::shared_ptr<EngineJob>& job, const std::string& error);
  void fail_live(const std::string& error);

  Model& model_;
  const Tokenizer& tok_;
  int max_batch_, context_;
  size_t max_queue_;
  int pool_positions_ = 0;
  std::unique_ptr<BatchDecoder> decoder_;
  std::unique_ptr<Generator> scorer_;  // echo + logprobs: the prompt's log-probabilities
  std::unique_ptr<WatermarkProcessor> watermark_;
  std::unique_ptr<LogitsProcessor> processor_;
  std::vector<EngineSequence> seqs_;  // by decoder id (max_batch entries)
  size_t next_choice_ = 0;            // of the queue's front job: the next to admit
  bool last_step_first_tokens_ = false;  // the last step ran only first tokens (see step())
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<EngineJob>> queue_;
  bool stop_ = false;
  EngineStats stats_;
  std::thread thread_;
};

// The longest prefix of `text` that is complete UTF-8 (a multi-byte character cut at the end is
// held back until its last byte arrives).
size_t complete_utf8_prefix(const std::string& text);

}  // namespace distill::serve
