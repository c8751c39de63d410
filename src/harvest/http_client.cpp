#include "harvest/http_client.h"

#include <curl/curl.h>

#include <cctype>
#include <ctime>
#include <mutex>

#include "core/error.h"

namespace distill::harvest {

const char* transport_error_name(TransportError e) {
  switch (e) {
    case TransportError::None:
      return "none";
    case TransportError::Timeout:
      return "timeout";
    case TransportError::Connect:
      return "connect";
    case TransportError::Truncated:
      return "truncated";
    case TransportError::Other:
      return "transport";
  }
  return "transport";
}

double parse_retry_after(const std::string& value) {
  size_t i = 0;
  while (i < value.size() && std::isspace(static_cast<unsigned char>(value[i]))) i++;
  if (i < value.size() && std::isdigit(static_cast<unsigned char>(value[i]))) {
    char* end = nullptr;
    const double s = std::strtod(value.c_str() + i, &end);
    return s >= 0 && s < 86400 ? s : -1.0;
  }
  const time_t t = curl_getdate(value.c_str(), nullptr);
  if (t < 0) return -1.0;
  return std::max(0.0, double(t - std::time(nullptr)));
}

namespace {

std::once_flag curl_init;

size_t on_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  const std::string line(data, size * n);
  const std::string name = "retry-after:";
  if (line.size() > name.size()) {
    std::string head = line.substr(0, name.size());
    for (char& c : head) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (head == name) *static_cast<double*>(user) = parse_retry_after(line.substr(name.size()));
  }
  return size * n;
}

}  // namespace

HttpClient::HttpClient() {
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
  if (!curl_) throw Error("libcurl: cannot create a handle");
}

HttpClient::~HttpClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

HttpResponse HttpClient::post_json(const std::string& url, const std::string& body,
                                   const std::string& bearer, double timeout_s) {
  CURL* c = static_cast<CURL*>(curl_);
  HttpResponse r;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  std::string auth;
  if (!bearer.empty()) {
    auth = "Authorization: Bearer " + bearer;
    headers = curl_slist_append(headers, auth.c_str());
  }
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.retry_after_s);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, long(timeout_s * 1000));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, long(std::min(timeout_s, 10.0) * 1000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
  const CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  if (rc != CURLE_OK) {
    r.error_text = curl_easy_strerror(rc);
    switch (rc) {
      case CURLE_OPERATION_TIMEDOUT:
        r.error = TransportError::Timeout;
        break;
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_SEND_ERROR:
      case CURLE_GOT_NOTHING:
        r.error = TransportError::Connect;
        break;
      case CURLE_PARTIAL_FILE:
      case CURLE_RECV_ERROR:
        r.error = TransportError::Truncated;
        break;
      default:
        r.error = TransportError::Other;
        break;
    }
  }
  return r;
}

std::string completions_url(std::string endpoint, bool chat) {
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  const std::string tail = "/completions";
  if (endpoint.size() >= tail.size() &&
      endpoint.compare(endpoint.size() - tail.size(), tail.size(), tail) == 0)
    return endpoint;
  return endpoint + (chat ? "/chat/completions" : "/completions");
}

}  // namespace distill::harvest
