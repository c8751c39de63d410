// The serving engine: a request queue and one engine thread that owns the model. Requests that
// arrive while the engine is busy wait in the queue; each engine pass takes every waiting
// request and decodes all their choices together in one batched Generator call (continuous
// batching inside the call), so concurrent clients share forward passes instead of taking
// turns. Per-choice sampling (temperature, top_p), max_tokens, stop strings, log-probabilities
// and streaming are applied through the Generator's logits-processor and stop hooks, so one call
// serves requests with different settings; a request completes as soon as its own choices do.
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
  int64_t passes = 0;     // Generator calls
  int64_t sequences = 0;  // choices decoded
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t queue_depth = 0;  // jobs waiting now
  int64_t running = 0;      // choices in the current pass
  double busy_seconds = 0.0;
};

class Engine {
 public:
  // max_batch: sequences decoded together; context: prompt + generation limit per sequence.
  // watermark: every sampled token is watermarked with this key (forensics/watermark.h).
  Engine(Model& model, const Tokenizer& tokenizer, int max_batch, int context,
         size_t max_queue = 256, const WatermarkKey* watermark = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job; false when the queue is full (the caller answers 429).
  bool submit(std::shared_ptr<EngineJob> job);
  int context() const { return context_; }
  EngineStats stats() const;

 private:
  void run();
  void pass(std::vector<std::shared_ptr<EngineJob>>& jobs);

  Model& model_;
  const Tokenizer& tok_;
  int max_batch_, context_;
  size_t max_queue_;
  std::unique_ptr<Generator> gen_;
  std::unique_ptr<WatermarkProcessor> watermark_;
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
