#include "serve/openai_format.h"

namespace distill::serve {

using json = nlohmann::json;

std::string token_string(const Tokenizer& tok, int32_t id) { return tok.decode({id}); }

namespace {

json bytes_json(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

}  // namespace

json completion_logprobs(const Tokenizer& tok, const std::vector<TokenInfo>& tokens, size_t offset,
                         bool first_null_token, int32_t first_id) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  if (first_null_token) {
    const std::string s = token_string(tok, first_id);
    out["tokens"].push_back(s);
    out["token_logprobs"].push_back(nullptr);
    out["top_logprobs"].push_back(nullptr);
    out["text_offset"].push_back(offset);
    offset += s.size();
  }
  for (const TokenInfo& t : tokens) {
    const std::string s = token_string(tok, t.id);
    out["tokens"].push_back(s);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const TopEntry& e : t.top) {
      const std::string es = token_string(tok, e.id);
      if (!top.contains(es)) top[es] = e.logprob;  // two ids may print alike: keep the likelier
    }
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    offset += s.size();
  }
  return out;
}

json chat_logprobs(const Tokenizer& tok, const std::vector<TokenInfo>& tokens) {
  json content = json::array();
  for (const TokenInfo& t : tokens) {
    const std::string s = token_string(tok, t.id);
    json top = json::array();
    for (const TopEntry& e : t.top) {
      const std::string es = token_string(tok, e.id);
      top.push_back({{"token", es}, {"logprob", e.logprob}, {"bytes", bytes_json(es)}});
    }
    content.push_back(
        {{"token", s}, {"logprob", t.logprob}, {"bytes", bytes_json(s)}, {"top_logprobs", top}});
  }
  return content;
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

}  // namespace distill::serve
