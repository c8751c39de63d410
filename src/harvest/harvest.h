// `distill harvest`: a teacher's completions collected from any OpenAI-compatible endpoint
// (distill serve, vLLM, llama.cpp's server, a commercial API) into the dataset format `distill
// generate` writes (data/dataset.h). Workers send up to `concurrency` requests at once, paced
// under requests- and tokens-per-minute limits; 429s, 5xx, timeouts, dropped connections and
// malformed bodies are retried with exponential backoff and jitter, honouring Retry-After.
// Records are keyed by prompt id and appended durably, so a harvest killed at any moment and run
// again finishes with every prompt exactly once. A spend cap stops new requests before the
// priced cost would pass it. When the endpoint's tokens map onto the local tokenizer the
// teacher's top log-probabilities are stored as token ids (usable for offline KD); otherwise the
// record keeps the text and the endpoint's log-probabilities as JSON.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace distill::harvest {

struct HarvestOptions {
  std::string endpoint;       // base URL as OpenAI SDKs take it, e.g. http://127.0.0.1:8000/v1
                              // (a URL ending in /completions is used as it is)
  std::string model;          // the model name sent in each request
  std::string prompts;        // JSONL: {"prompt": ...} or {"messages": [...]}, optional "id"
  std::string out;            // dataset directory (resumed when it exists)
  std::string mode = "chat";  // "chat" (/chat/completions) or "completions"
  std::string api_key_env = "OPENAI_API_KEY";  // the environment variable holding the key
  std::string tokenizer;        // local tokenizer (model dir or tokenizer file); "" = byte-level
  int concurrency = 4;          // requests in flight
  double rpm = 0.0, tpm = 0.0;  // client-side limits per minute (0: none)
  int max_tokens = 128;
  float temperature = 1.0f, top_p = 1.0f;
  std::optional<uint64_t> seed;  // sent per prompt as seed ^ hash(id) (reproducible reruns)
  int top_logprobs = 5;          // alternatives asked per token (1..20), the dataset's k
  int retries = 8;               // attempts after the first for one prompt
  double backoff_base_s = 0.5, backoff_max_s = 60.0;
  double timeout_s = 120.0;                        // per request
  double max_cost = 0.0;                           // dollars; 0: no cap
  std::string pricing;                             // pricing table (pricing.h)
  double price_input = -1.0, price_output = -1.0;  // $ per 1M tokens, override the table
  std::string encoding = "compact";
};

struct HarvestProgress {
  int64_t done = 0, total = 0, skipped = 0;  // records in the dataset (resumed included) / prompts
  int64_t failed = 0;                        // prompts given up on this run
  int64_t requests = 0;                      // HTTP requests sent this run (retries included)
  int64_t tokens = 0;                        // completion tokens received this run
  std::map<std::string, int64_t> errors;     // "429", "5xx", "timeout", "connect", "malformed", ...
  double cost = 0.0;                         // dollars, resumed records included
  bool priced = false;
  double elapsed_s = 0.0, requests_per_s = 0.0, tokens_per_s = 0.0, eta_s = 0.0;
  std::string note;  // a one-off message (resume, cap, failures)
};

struct HarvestSummary {
  int64_t done = 0, total = 0, failed = 0;
  double cost = 0.0;
  bool stopped_by_cost = false;
};

// Runs the harvest. Fatal problems (no key in the environment, 401/403/404 from the endpoint, a
// dataset written with another tokenizer) are errors; prompts that still fail after the retries
// are counted in the summary (rerunning retries them).
HarvestSummary run_harvest(const HarvestOptions& options,
                           const std::function<void(const HarvestProgress&)>& progress);

}  // namespace distill::harvest
