// A teacher behind an OpenAI-compatible legacy completions endpoint that scores given token
// sequences: the ids are sent as the prompt (an array of token ids, which the legacy API, vLLM
// and distill serve accept; text could not carry a byte-level model's partial UTF-8) with
// echo = true, logprobs = k and max_tokens = 0, and the response carries every prompt token's
// top-k log-probabilities (chat-only APIs cannot do this). Online and on-policy distillation use
// it with `distill train --teacher-endpoint`: the student's tokenizer must be the endpoint's. The
// alternatives come back as strings and are mapped to ids by their bytes; one that does not map
// (an invalid UTF-8 byte the server's JSON replaced) counts in the tail mass.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "harvest/token_mapper.h"
#include "tokenizer/tokenizer.h"

namespace distill::harvest {

struct ApiTeacherOptions {
  std::string endpoint;                        // base URL, e.g. http://127.0.0.1:8000/v1
  std::string model;                           // the model name sent with each request
  std::string api_key_env = "OPENAI_API_KEY";  // environment variable holding the key
  int top_logprobs = 20;                       // alternatives per position (1..20)
  int concurrency = 4;                         // requests in flight
  int retries = 4;                             // attempts after the first (429, 5xx, transport)
  double timeout_s = 120.0;
};

// One scored sequence of n tokens: for positions t >= 1 the teacher's top-k log-probabilities of
// token t given tokens < t (row-major (n, k); row 0 is empty: the first token has no context).
struct ScoredText {
  int k = 0;
  std::vector<int32_t> top_ids;     // (n, k), -1 padded
  std::vector<float> top_logprobs;  // (n, k)
  std::vector<int> counts;          // alternatives per row
  std::vector<float> tail;          // probability mass outside each row's alternatives
};

class ApiTeacher {
 public:
  // `tokenizer`: the student's (the endpoint's vocabulary), used to map the alternatives.
  ApiTeacher(const ApiTeacherOptions& options, const Tokenizer& tokenizer);
  // Scores the sequences (concurrently); an endpoint that does not return prompt
  // log-probabilities is an error naming it.
  std::vector<ScoredText> score(const std::vector<std::vector<int32_t>>& sequences);
  int64_t requests() const { return requests_; }

 private:
  ScoredText score_one(const std::vector<int32_t>& ids, void* client);

  ApiTeacherOptions o_;
  TokenMapper mapper_;
  std::string url_, key_;
  std::atomic<int64_t> requests_{0};
};

}  // namespace distill::harvest
