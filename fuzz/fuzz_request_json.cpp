// libFuzzer target: the JSON that faces the network. parse_api_request (distill serve's
// /v1/completions and /v1/chat/completions bodies) and parse_completion_response (what distill
// harvest reads back from an endpoint) on arbitrary bytes. A parsed request must respect the
// limits; anything but an ApiError / distill::Error is a finding.
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "harvest/openai_response.h"
#include "serve/api_request.h"

using namespace distill;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  serve::RequestLimits limits;
  limits.max_prompt_chars = 4096;
  for (bool chat : {false, true}) {
    try {
      const serve::ApiRequest r = serve::parse_api_request(body, chat, limits);
      if (r.n < 1 || r.n > limits.max_n) __builtin_trap();
      if (r.max_tokens && (*r.max_tokens < 0 || *r.max_tokens > limits.max_tokens))
        __builtin_trap();
      if (r.logprobs < -1 || r.logprobs > limits.max_logprobs) __builtin_trap();
      if (!(r.temperature >= 0.0f && r.temperature <= 2.0f)) __builtin_trap();
      if (!(r.top_p > 0.0f && r.top_p <= 1.0f)) __builtin_trap();
      if (r.stop.size() > 4) __builtin_trap();
      if (chat ? r.messages.empty() : r.prompts.empty()) __builtin_trap();
      if (int(r.prompts.size()) > limits.max_prompts) __builtin_trap();
    } catch (const serve::ApiError& e) {
      if (e.status != 400 && e.status != 413) __builtin_trap();
    }
    try {
      harvest::parse_completion_response(std::string(body), chat);
    } catch (const Error&) {
    }
  }
  return 0;
}
