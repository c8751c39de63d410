#include "serve/api_keys.h"

#include <openssl/evp.h>

#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace distill::serve {

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    throw Error("SHA-256 failed (OpenSSL)");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; i++) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

namespace {

int parse_limit(const std::string& value, const std::string& where) {
  try {
    size_t used = 0;
    const long v = std::stol(value, &used);
    if (used == value.size() && v >= 0 && v <= 1000000000) return int(v);
  } catch (const std::exception&) {
  }
  throw Error("{}: expected a non-negative integer, got '{}'", where, value);
}

}  // namespace

KeyStore KeyStore::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot open the API key file: {}", path, std::strerror(errno));
  KeyStore store;
  std::set<std::string> ids;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    number++;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    ApiKey key;
    std::string digest, extra;
    if (!(fields >> key.id)) continue;
    const std::string where = fmt::format("{} line {}", path, number);
    if (!(fields >> digest) || digest.size() != 64 ||
        digest.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      throw Error(
          "{}: expected '<id> <64 hex digits: the key's SHA-256> [rpm=N] [tpm=N]' "
          "(the file holds hashes, never keys)",
          where);
    for (char& c : digest) c = char(std::tolower(static_cast<unsigned char>(c)));
    while (fields >> extra) {
      if (extra.rfind("rpm=", 0) == 0)
        key.rpm = parse_limit(extra.substr(4), where);
      else if (extra.rfind("tpm=", 0) == 0)
        key.tpm = parse_limit(extra.substr(4), where);
      else
        throw Error("{}: unknown field '{}' (expected rpm=N or tpm=N)", where, extra);
    }
    if (!ids.insert(key.id).second) throw Error("{}: duplicate key id '{}'", where, key.id);
    if (store.by_hash_.count(digest)) throw Error("{}: the same key hash appears twice", where);
    store.by_hash_[digest] = key;
  }
  if (store.by_hash_.empty()) throw Error("{}: no API keys", path);
  return store;
}

const ApiKey* KeyStore::find(std::string_view bearer) const {
  auto it = by_hash_.find(sha256_hex(bearer));
  return it == by_hash_.end() ? nullptr : &it->second;
}

void RateLimiter::expire(Window& w, Clock::time_point now) {
  const auto cutoff = now - std::chrono::seconds(60);
  while (!w.requests.empty() && w.requests.front() <= cutoff) w.requests.pop_front();
  while (!w.tokens.empty() && w.tokens.front().first <= cutoff) {
    w.token_sum -= w.tokens.front().second;
    w.tokens.pop_front();
  }
}

std::optional<double> RateLimiter::admit(const ApiKey& key, std::string* limit_kind) {
  const int rpm = key.rpm > 0 ? key.rpm : rpm_;
  const int tpm = key.tpm > 0 ? key.tpm : tpm_;
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  Window& w = windows_[key.id];
  expire(w, now);
  auto wait_until = [&](Clock::time_point t) {
    return std::max(0.001,
                    std::chrono::duration<double>(t + std::chrono::seconds(60) - now).count());
  };
  if (rpm > 0 && int(w.requests.size()) >= rpm) {
    if (limit_kind) *limit_kind = "requests";
    return wait_until(w.requests[w.requests.size() - size_t(rpm)]);
  }
  if (tpm > 0 && w.token_sum >= tpm) {
    // The oldest entries whose expiry brings the sum under the limit.
    int64_t sum = w.token_sum;
    for (const auto& [t, n] : w.tokens) {
      sum -= n;
      if (sum < tpm) {
        if (limit_kind) *limit_kind = "tokens";
        return wait_until(t);
      }
    }
  }
  w.requests.push_back(now);
  return std::nullopt;
}

void RateLimiter::add_tokens(const ApiKey& key, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  Window& w = windows_[key.id];
  w.tokens.emplace_back(Clock::now(), tokens);
  w.token_sum += tokens;
}

}  // namespace distill::serve
