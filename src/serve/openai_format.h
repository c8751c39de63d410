// Response bodies in OpenAI's shapes: text_completion (legacy logprobs: tokens, token_logprobs,
// top_logprobs, text_offset), chat.completion (logprobs.content[] with token, logprob, bytes,
// top_logprobs), and the streaming chunks of both.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "serve/engine.h"
#include "tokenizer/tokenizer.h"

namespace distill::serve {

struct ResponseHeader {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// The text of one token as the API shows it (the decoded bytes; may be part of a character).
std::string token_string(const Tokenizer& tok, int32_t id);

// Legacy completions logprobs of `tokens`, starting at text offset `offset`; `first_null`
// makes the first entry's logprob and top_logprobs null (the first prompt token under echo).
nlohmann::json completion_logprobs(const Tokenizer& tok, const std::vector<TokenInfo>& tokens,
                                   size_t offset, bool first_null_token = false,
                                   int32_t first_id = -1);
// Chat logprobs.content entries of `tokens`.
nlohmann::json chat_logprobs(const Tokenizer& tok, const std::vector<TokenInfo>& tokens);

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

}  // namespace distill::serve
