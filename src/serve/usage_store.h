// Every request the server answers, recorded in SQLite (WAL journal, so readers such as an audit
// can query while the server writes): key id, time, endpoint, prompt hash and length, tokens in
// and out, whether log-probabilities were asked for, latency and HTTP status.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace distill::serve {

struct UsageRecord {
  std::string key_id;         // "" when the request had no valid key
  double time = 0.0;          // Unix seconds
  std::string endpoint;       // "/v1/chat/completions", ...
  std::string prompt_sha256;  // of the prompt text or message JSON ("" when none was parsed)
  int64_t prompt_chars = 0;
  int64_t tokens_in = 0, tokens_out = 0;
  int logprobs = -1;  // top entries asked for; -1: none
  double latency_ms = 0.0;
  int status = 0;
};

class UsageStore {
 public:
  // Opens (creating) the database at `path`; errors name the path and SQLite's message.
  explicit UsageStore(const std::string& path);
  ~UsageStore();
  UsageStore(const UsageStore&) = delete;
  UsageStore& operator=(const UsageStore&) = delete;

  void record(const UsageRecord& r);  // thread-safe
  int64_t count();                    // rows so far

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  std::mutex mu_;
};

}  // namespace distill::serve
