// The request bodies of /v1/completions and /v1/chat/completions, parsed and checked against the
// server's limits before anything reaches the engine. Every problem is an ApiError (400, naming
// the parameter; 413 for a prompt over the limit), never a crash: this parser faces the network
// (fuzz/fuzz_request_json.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "serve/api_error.h"

namespace distill::serve {

struct RequestLimits {
  int max_tokens = 1024;              // largest max_tokens a request may ask for
  int max_n = 8;                      // largest n (choices per prompt)
  int max_prompts = 16;               // prompts in one /v1/completions request
  int max_logprobs = 20;              // logprobs (completions) and top_logprobs (chat)
  size_t max_prompt_chars = 1 << 20;  // text of all prompts / messages (413 beyond)
};

// A prompt given as text or as token ids.
struct PromptInput {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

struct ChatInputMessage {
  std::string role, content;
};

struct ApiRequest {
  bool chat = false;
  std::string model;
  std::vector<PromptInput> prompts;        // completions: one or more
  std::vector<ChatInputMessage> messages;  // chat
  std::optional<int> max_tokens;           // unset: completions 16, chat the context's rest
  float temperature = 1.0f;                // 0: greedy
  float top_p = 1.0f;
  int n = 1;
  std::vector<std::string> stop;  // at most 4, non-empty
  std::optional<uint64_t> seed;
  int logprobs = -1;  // top entries per token; -1: no logprobs at all
  bool echo = false;  // completions: the prompt precedes the completion
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses a request body; `chat` selects the endpoint's schema. Unknown fields, wrong types and
// out-of-range values are 400s naming the field.
ApiRequest parse_api_request(std::string_view body, bool chat, const RequestLimits& limits);

}  // namespace distill::serve
