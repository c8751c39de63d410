#include "serve/api_request.h"

#include <cmath>
#include <limits>

namespace distill::serve {
namespace {

using json = nlohmann::json;

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a number";
    default:
      return "an integer";
  }
}

int get_int(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())
    throw bad_request(name, "'{}' must be an integer, got {}", name, type_name(v));
  const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)
                        ? INT64_MAX
                        : v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, x);
  return int(x);
}

float get_number(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_number()) throw bad_request(name, "'{}' must be a number, got {}", name, type_name(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad_request(name, "'{}' must be in [{}, {}], got {}", name, lo, hi, x);
  return float(x);
}

bool get_bool(const json& v, const std::string& name) {
  if (!v.is_boolean())
    throw bad_request(name, "'{}' must be a boolean, got {}", name, type_name(v));
  return v.get<bool>();
}

std::string get_string(const json& v, const std::string& name) {
  if (!v.is_string()) throw bad_request(name, "'{}' must be a string, got {}", name, type_name(v));
  return v.get<std::string>();
}

std::vector<int32_t> get_ids(const json& v, const std::string& name) {
  std::vector<int32_t> ids;
  for (const json& t : v) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max())
      throw bad_request(name, "'{}' token ids must be non-negative integers", name);
    ids.push_back(int32_t(t.get<int64_t>()));
  }
  return ids;
}

// prompt: "text", ["text", ...], [id, ...] or [[id, ...], ...].
std::vector<PromptInput> get_prompts(const json& v, const RequestLimits& limits) {
  std::vector<PromptInput> out;
  if (v.is_string()) {
    out.push_back({v.get<std::string>(), {}, false});
  } else if (v.is_array() && !v.empty() && v[0].is_number()) {
    out.push_back({"", get_ids(v, "prompt"), true});
  } else if (v.is_array() && !v.empty()) {
    if (v.size() > size_t(limits.max_prompts))
      throw bad_request("prompt", "at most {} prompts per request, got {}", limits.max_prompts,
                        v.size());
    for (const json& p : v) {
      if (p.is_string()) {
        out.push_back({p.get<std::string>(), {}, false});
      } else if (p.is_array() && !p.empty()) {
        out.push_back({"", get_ids(p, "prompt"), true});
      } else {
        throw bad_request("prompt",
                          "each prompt must be a string or a non-empty array of token ids");
      }
    }
  } else {
    throw bad_request("prompt",
                      "'prompt' must be a string, an array of strings or an array of token ids");
  }
  size_t chars = 0;
  for (const PromptInput& p : out) chars += p.is_ids ? p.ids.size() * 4 : p.text.size();
  if (chars > limits.max_prompt_chars)
    throw ApiError(413, "invalid_request_error",
                   fmt::format("the prompt is too large ({} bytes; the limit is {})", chars,
                               limits.max_prompt_chars),
                   "prompt", "prompt_too_large");
  return out;
}

std::string message_content(const json& c, size_t i) {
  const std::string name = fmt::format("messages[{}].content", i);
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (!c.is_array()) throw bad_request(name, "'{}' must be a string or an array of parts", name);
  std::string text;
  for (const json& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      throw bad_request(
          name, "'{}': only {{\"type\": \"text\", \"text\": ...}} parts are supported", name);
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatInputMessage> get_messages(const json& v, const RequestLimits& limits) {
  if (!v.is_array() || v.empty())
    throw bad_request("messages", "'messages' must be a non-empty array");
  std::vector<ChatInputMessage> out;
  size_t chars = 0;
  for (size_t i = 0; i < v.size(); i++) {
    const json& m = v[i];
    if (!m.is_object() || !m.contains("role"))
      throw bad_request(fmt::format("messages[{}]", i),
                        "'messages[{}]' must be an object with a 'role'", i);
    ChatInputMessage msg;
    msg.role = get_string(m["role"], fmt::format("messages[{}].role", i));
    static const char* roles[] = {"system", "developer", "user", "assistant", "tool"};
    if (std::find(std::begin(roles), std::end(roles), msg.role) == std::end(roles))
      throw bad_request(fmt::format("messages[{}].role", i), "unknown role '{}'", msg.role);
    if (msg.role == "developer") msg.role = "system";
    msg.content = m.contains("content") ? message_content(m["content"], i) : "";
    chars += msg.content.size();
    out.push_back(std::move(msg));
  }
  if (chars > limits.max_prompt_chars)
    throw ApiError(413, "invalid_request_error",
                   fmt::format("the messages are too large ({} bytes; the limit is {})", chars,
                               limits.max_prompt_chars),
                   "messages", "prompt_too_large");
  return out;
}

std::vector<std::string> get_stop(const json& v) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 4)
      throw bad_request("stop", "'stop' takes at most 4 sequences, got {}", v.size());
    for (const json& s : v) out.push_back(get_string(s, "stop"));
  } else {
    throw bad_request("stop", "'stop' must be a string or an array of strings");
  }
  for (const std::string& s : out)
    if (s.empty()) throw bad_request("stop", "stop sequences must not be empty");
  return out;
}

}  // namespace

ApiRequest parse_api_request(std::string_view body, bool chat, const RequestLimits& limits) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw ApiError(400, "invalid_request_error", "the request body is not valid JSON", "",
                   "invalid_json");
  if (!j.is_object()) throw bad_request("", "the request body must be a JSON object");
  ApiRequest r;
  r.chat = chat;
  bool has_input = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "model") {
      r.model = get_string(v, k);
    } else if (!chat && k == "prompt") {
      r.prompts = get_prompts(v, limits);
      has_input = true;
    } else if (chat && k == "messages") {
      r.messages = get_messages(v, limits);
      has_input = true;
    } else if (k == "max_tokens" || (chat && k == "max_completion_tokens")) {
      if (!v.is_null()) r.max_tokens = get_int(v, k, 0, limits.max_tokens);
    } else if (k == "temperature") {
      if (!v.is_null()) r.temperature = get_number(v, k, 0.0, 2.0);
    } else if (k == "top_p") {
      if (!v.is_null()) r.top_p = get_number(v, k, 0.0, 1.0);
      if (r.top_p <= 0.0f) throw bad_request(k, "'top_p' must be greater than 0");
    } else if (k == "n") {
      if (!v.is_null()) r.n = get_int(v, k, 1, limits.max_n);
    } else if (k == "stop") {
      r.stop = get_stop(v);
    } else if (k == "seed") {
      if (!v.is_null()) {
        if (!v.is_number_integer())
          throw bad_request(k, "'seed' must be an integer, got {}", type_name(v));
        r.seed = v.is_number_unsigned() ? v.get<uint64_t>() : uint64_t(v.get<int64_t>());
      }
    } else if (k == "logprobs") {
      if (v.is_null()) continue;
      if (chat) {
        if (get_bool(v, k) && r.logprobs < 0) r.logprobs = 0;
        if (!v.get<bool>()) r.logprobs = -1;
      } else {
        r.logprobs = get_int(v, k, 0, limits.max_logprobs);
      }
    } else if (chat && k == "top_logprobs") {
      if (v.is_null()) continue;
      const int t = get_int(v, k, 0, limits.max_logprobs);
      if (!j.contains("logprobs") || j["logprobs"] != true)
        throw bad_request(k, "'top_logprobs' needs 'logprobs': true");
      r.logprobs = t;
    } else if (!chat && k == "echo") {
      if (!v.is_null()) r.echo = get_bool(v, k);
    } else if (k == "stream") {
      if (!v.is_null()) r.stream = get_bool(v, k);
    } else if (k == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) throw bad_request(k, "'stream_options' must be an object");
      if (v.contains("include_usage"))
        r.include_usage = get_bool(v["include_usage"], "stream_options.include_usage");
    } else if (k == "user") {
      if (!v.is_null()) get_string(v, k);
    } else if (k == "presence_penalty" || k == "frequency_penalty") {
      if (!v.is_null() && get_number(v, k, -2.0, 2.0) != 0.0f)
        throw bad_request(k, "'{}' is not supported (only 0)", k);
    } else if (k == "logit_bias") {
      if (!v.is_null() && !(v.is_object() && v.empty()))
        throw bad_request(k, "'logit_bias' is not supported");
    } else if (!chat && k == "best_of") {
      if (!v.is_null() &&
          get_int(v, k, 1, limits.max_n) !=
              (j.contains("n") && j["n"].is_number_integer() ? j["n"].get<int64_t>() : 1))
        throw bad_request(k, "'best_of' other than n is not supported");
    } else if (!chat && k == "suffix") {
      if (!v.is_null() && !(v.is_string() && v.get<std::string>().empty()))
        throw bad_request(k, "'suffix' is not supported");
    } else {
      throw bad_request(k, "unrecognized request argument supplied: {}", k);
    }
  }
  if (!j.contains("model")) throw bad_request("model", "'model' is required");
  if (!has_input)
    throw bad_request(chat ? "messages" : "prompt", "'{}' is required",
                      chat ? "messages" : "prompt");
  if (r.prompts.size() * size_t(r.n) > size_t(limits.max_prompts) * size_t(limits.max_n))
    throw bad_request("n", "too many choices in one request");
  if (r.include_usage && !r.stream)
    throw bad_request("stream_options", "'stream_options' needs 'stream': true");
  return r;
}

}  // namespace distill::serve
