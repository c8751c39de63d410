// Reading an OpenAI-compatible completion response (chat or legacy completions): the text, the
// finish reason, token usage and, when asked for, each token's log-probability and top
// alternatives. Anything that is not such a response is an Error (the harvester counts it as
// "malformed" and retries).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace distill::harvest {

struct HarvestedToken {
  std::string bytes;  // the token's bytes (chat "bytes" when given, else its text)
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;  // (bytes, logprob), as the endpoint ordered them
};

struct HarvestedCompletion {
  std::string text;
  std::string finish_reason;
  std::vector<HarvestedToken> tokens;                  // empty when the endpoint gave no logprobs
  int64_t prompt_tokens = -1, completion_tokens = -1;  // usage; -1 when absent
};

HarvestedCompletion parse_completion_response(const std::string& body, bool chat);

}  // namespace distill::harvest
