// OpenAI-style API errors: an HTTP status and the body {"error": {"message", "type", "param",
// "code"}} that OpenAI's SDKs turn into their error classes (400 BadRequestError, 401
// AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError, 500 InternalServerError).
#pragma once
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

namespace distill::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = "",
           std::string code = "")
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}

  int status;
  std::string type;   // "invalid_request_error", "authentication_error", "rate_limit_error", ...
  std::string param;  // the offending request field, "" for none
  std::string code;   // "invalid_api_key", "model_not_found", "rate_limit_exceeded", ...
  double retry_after_s = 0.0;  // 429: the Retry-After header (seconds, rounded up)

  nlohmann::json body() const {
    nlohmann::json e = {{"message", what()},
                        {"type", type},
                        {"param", param.empty() ? nlohmann::json() : nlohmann::json(param)},
                        {"code", code.empty() ? nlohmann::json() : nlohmann::json(code)}};
    return {{"error", e}};
  }
};

// 400 with the parameter named.
template <typename... Args>
ApiError bad_request(const std::string& param, fmt::format_string<Args...> f, Args&&... args) {
  return ApiError(400, "invalid_request_error", fmt::format(f, std::forward<Args>(args)...), param);
}

// JSON text for responses: invalid UTF-8 (a byte-level token cut mid-character) becomes U+FFFD
// instead of an exception.
inline std::string to_json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace distill::serve
