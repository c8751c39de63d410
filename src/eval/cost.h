// What a model costs to keep and to run: parameters, bytes on disk, prompt-processing and
// generation speed through the batched Generator, and peak memory while it runs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/qmatmul.h"

namespace distill {

struct CostOptions {
  int prompt_tokens = 64;    // tokens per prompt for prompt processing (shrunk to fit context)
  int gen_tokens = 32;       // tokens generated per sequence for the generation speed
  int repeats = 3;           // timed runs after one warm-up (at least); the fastest counts
  double min_seconds = 0.5;  // keep repeating (up to 100 runs) until this much time is timed
  std::vector<int> batches = {1, 8};
};

// Speed at one batch size: B prompts of P tokens through Generator::generate(), greedy, no
// stop tokens, max_tokens = 1 + G. The generator's per-token callback timestamps the first token
// of the batch: prefill time t_p is from the call to that moment (the prompt forward pass and
// one sampling step), decode time t_d from then to the return (the other G tokens of every
// sequence). Each is the fastest over the runs, so a run disturbed by other processes does not
// count.
struct ThroughputSample {
  int batch = 0;
  int prompt_tokens = 0;             // P per sequence
  int gen_tokens = 0;                // G per sequence (after the first)
  double prefill_s = 0.0;            // t_p (fastest run)
  double decode_s = 0.0;             // t_d (fastest run)
  double prompt_tokens_per_s = 0.0;  // B * P / t_p
  double gen_tokens_per_s = 0.0;     // B * G / t_d
  int repeats = 0;                   // timed runs
};

struct CostMetrics {
  int64_t parameters = 0;                    // distinct parameters (a tied head counts once)
  int64_t weights_file_bytes = 0;            // *.safetensors in the model directory, on disk
  int64_t weights_memory_bytes = 0;          // weights in memory: Model::weight_bytes()
  std::vector<ThroughputSample> throughput;  // one per CostOptions::batches
  // Peak resident memory of the process while the model is loaded and measured, minus the
  // resident memory just before loading (bytes): the kernel's peak counter (VmHWM) is reset
  // through /proc/self/clear_refs first. Includes the weights, the gradient arena Model always
  // allocates, activations and KV caches, and one-time allocations the libraries make for the
  // first model of a shape (oneDNN kernels, thread pools). -1 when the counter cannot be reset.
  int64_t peak_rss_delta_bytes = -1;
  std::string memory_method;  // how peak_rss_delta_bytes was measured
  int threads = 0;            // OpenMP threads during the timings
  // The speed at `batch`, or nullptr.
  const ThroughputSample* at_batch(int batch) const;
};

// Sum of the sizes of the *.safetensors files of a model directory.
int64_t weights_file_bytes(const std::string& dir);

// Loads the model from `dir` (so the memory peak includes its weights), measures it and frees it.
// Prompts are cut from `sample_tokens` (e.g. held-out text; reused cyclically).
// `weights`: the type its linear layers run with (kernels/qmatmul.h).
CostMetrics measure_cost(const std::string& dir, const std::vector<int32_t>& sample_tokens,
                         const CostOptions& options, WeightType weights = WeightType::F32);

// Resident set size of this process now (VmRSS), bytes; -1 when unknown.
int64_t current_rss_bytes();

}  // namespace distill
