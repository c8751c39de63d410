// A blocking HTTP POST of JSON over libcurl, one handle per worker thread (connections are
// reused between calls). Transport failures come back as a kind, not an exception, so the
// harvester can count and retry them.
#pragma once
#include <memory>
#include <string>

namespace distill::harvest {

enum class TransportError { None, Timeout, Connect, Truncated, Other };
const char* transport_error_name(TransportError e);  // "timeout", "connect", ...

struct HttpResponse {
  TransportError error = TransportError::None;
  std::string error_text;  // curl's message when error != None
  long status = 0;         // HTTP status (0 without a response)
  std::string body;
  double retry_after_s = -1.0;  // the Retry-After header (seconds), -1 when absent
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POSTs `body` (application/json) to `url`; `bearer` adds "Authorization: Bearer ..." when
  // non-empty. timeout_s bounds the whole exchange.
  HttpResponse post_json(const std::string& url, const std::string& body, const std::string& bearer,
                         double timeout_s);

 private:
  void* curl_ = nullptr;
};

// The URL to POST completions to, from a base URL as OpenAI SDKs take it
// (http://host:port/v1 -> .../v1/completions or .../v1/chat/completions); a URL that already
// ends in /completions is used as it is.
std::string completions_url(std::string endpoint, bool chat);

// Seconds from a Retry-After value (delta-seconds or an HTTP date); -1 when unparseable.
double parse_retry_after(const std::string& value);

}  // namespace distill::harvest
