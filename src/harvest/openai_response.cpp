#include "harvest/openai_response.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace distill::harvest {

using json = nlohmann::json;

namespace {

std::string token_bytes(const json& entry) {
  if (entry.contains("bytes") && entry["bytes"].is_array()) {
    std::string s;
    for (const json& b : entry["bytes"]) {
      if (!b.is_number_integer() || b.get<int64_t>() < 0 || b.get<int64_t>() > 255)
        throw Error("a token's \"bytes\" must be integers in [0, 255]");
      s += char(b.get<int>());
    }
    return s;
  }
  if (!entry.contains("token") || !entry["token"].is_string())
    throw Error("a logprobs entry has no \"token\" string");
  return entry["token"].get<std::string>();
}

float logprob_value(const json& v) {
  if (!v.is_number()) throw Error("a logprob is not a number");
  const double x = v.get<double>();
  if (std::isnan(x) || x > 1e-3) throw Error("a logprob is not <= 0: {}", x);
  return float(std::max(x, -1e30));
}

}  // namespace

HarvestedCompletion parse_completion_response(const std::string& body, bool chat) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw Error("the response is not JSON ({} bytes)", body.size());
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty())
    throw Error("the response has no \"choices\"");
  const json& c = j["choices"][0];
  if (!c.is_object()) throw Error("choices[0] is not an object");
  HarvestedCompletion out;
  if (chat) {
    if (!c.contains("message") || !c["message"].is_object())
      throw Error("choices[0] has no \"message\"");
    const json& content = c["message"].value("content", json());
    if (!content.is_string() && !content.is_null())
      throw Error("choices[0].message.content is not a string");
    out.text = content.is_string() ? content.get<std::string>() : "";
  } else {
    if (!c.contains("text") || !c["text"].is_string()) throw Error("choices[0] has no \"text\"");
    out.text = c["text"].get<std::string>();
  }
  if (c.contains("finish_reason") && c["finish_reason"].is_string())
    out.finish_reason = c["finish_reason"].get<std::string>();
  if (j.contains("usage") && j["usage"].is_object()) {
    const json& u = j["usage"];
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
      out.prompt_tokens = u["prompt_tokens"].get<int64_t>();
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
      out.completion_tokens = u["completion_tokens"].get<int64_t>();
  }
  const json lp = c.value("logprobs", json());
  if (lp.is_null()) return out;
  if (!lp.is_object()) throw Error("choices[0].logprobs is not an object");
  if (chat) {
    const json content = lp.value("content", json());
    if (content.is_null()) return out;
    if (!content.is_array()) throw Error("logprobs.content is not an array");
    for (const json& e : content) {
      if (!e.is_object()) throw Error("a logprobs.content entry is not an object");
      HarvestedToken t;
      t.bytes = token_bytes(e);
      t.logprob = logprob_value(e.value("logprob", json()));
      const json top = e.value("top_logprobs", json::array());
      if (!top.is_array()) throw Error("top_logprobs is not an array");
      for (const json& alt : top) {
        if (!alt.is_object()) throw Error("a top_logprobs entry is not an object");
        t.top.emplace_back(token_bytes(alt), logprob_value(alt.value("logprob", json())));
      }
      out.tokens.push_back(std::move(t));
    }
  } else {
    const json tokens = lp.value("tokens", json());
    const json values = lp.value("token_logprobs", json());
    const json tops = lp.value("top_logprobs", json());
    if (!tokens.is_array() || !values.is_array() || tokens.size() != values.size())
      throw Error("logprobs.tokens and logprobs.token_logprobs do not match");
    for (size_t i = 0; i < tokens.size(); i++) {
      if (!tokens[i].is_string()) throw Error("logprobs.tokens[{}] is not a string", i);
      HarvestedToken t;
      t.bytes = tokens[i].get<std::string>();
      t.logprob = values[i].is_null() ? 0.0f : logprob_value(values[i]);
      if (tops.is_array() && i < tops.size() && tops[i].is_object()) {
        for (auto it = tops[i].begin(); it != tops[i].end(); ++it)
          t.top.emplace_back(it.key(), logprob_value(it.value()));
        std::stable_sort(t.top.begin(), t.top.end(),
                         [](const auto& a, const auto& b) { return a.second > b.second; });
      }
      out.tokens.push_back(std::move(t));
    }
  }
  return out;
}

}  // namespace distill::harvest
