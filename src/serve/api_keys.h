// API keys and per-key rate limits. The key file holds only SHA-256 hashes of keys, one key a
// line:
//
//   # id        sha256 of the key (hex)                                            limits
//   alice       2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b   rpm=60 tpm=20000
//
// (`distill serve --hash-key` prints the hash of a key read from stdin.) A request's
// "Authorization: Bearer <key>" is hashed and looked up; the key itself is never stored or
// logged, only its id.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace distill::serve {

// SHA-256 of `data` as 64 lowercase hex digits (OpenSSL).
std::string sha256_hex(std::string_view data);

struct ApiKey {
  std::string id;
  int rpm = 0;  // requests per minute; 0: the server's default
  int tpm = 0;  // tokens (prompt + completion) per minute; 0: the server's default
};

class KeyStore {
 public:
  // An empty store: when it has no keys the server runs without authentication.
  KeyStore() = default;
  // Errors name the file and line: a malformed hash, a duplicate id or hash, an unknown field.
  static KeyStore load(const std::string& path);
  bool empty() const { return by_hash_.empty(); }
  size_t size() const { return by_hash_.size(); }
  // The key whose hash matches the bearer token, or nothing.
  const ApiKey* find(std::string_view bearer) const;

 private:
  std::map<std::string, ApiKey> by_hash_;
};

// Sliding one-minute windows of requests and tokens per key.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  // default_rpm / default_tpm apply to keys without their own limits (0: unlimited).
  RateLimiter(int default_rpm, int default_tpm) : rpm_(default_rpm), tpm_(default_tpm) {}

  // Admits a request of `key` now (recording it) or returns the seconds until one would be
  // admitted. `limit_kind` says which limit refused it ("requests" or "tokens").
  std::optional<double> admit(const ApiKey& key, std::string* limit_kind);
  // Counts tokens a finished request used.
  void add_tokens(const ApiKey& key, int64_t tokens);

 private:
  struct Window {
    std::deque<Clock::time_point> requests;
    std::deque<std::pair<Clock::time_point, int64_t>> tokens;
    int64_t token_sum = 0;
  };
  void expire(Window& w, Clock::time_point now);
  int rpm_, tpm_;
  std::mutex mu_;
  std::map<std::string, Window> windows_;
};

}  // namespace distill::serve
