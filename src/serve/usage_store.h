// Every request the server answers, recorded in SQLite (WAL journal, so readers such as an audit
// can query while the server writes): key id, time, endpoint, prompt hash and length, tokens in
// and out, whether log-probabilities were asked for, latency and HTTP status, and a prompt sketch
// (the prompt's words as hashes, src/forensics/prompt_sketch.h) for the harvest audit.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

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
  std::string prompt_sketch;  // little-endian uint32 word hashes (sketch_to_blob); "" when none
};

class UsageStore {
 public:
  // Opens (creating) the database at `path`; errors name the path and SQLite's message. A
  // database written before a column existed gets it added (ALTER TABLE ... ADD COLUMN).
  explicit UsageStore(const std::string& path);
  ~UsageStore();
  UsageStore(const UsageStore&) = delete;
  UsageStore& operator=(const UsageStore&) = delete;

  void record(const UsageRecord& r);  // thread-safe
  // Many rows in one transaction (the traffic simulator); all or none are written.
  void record_all(const std::vector<UsageRecord>& rows);
  int64_t count();                    // rows so far

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  std::mutex mu_;
  void insert_locked(const UsageRecord& r);
};

// Every row of the usage store at `path`, opened read-only, in (time, id) order. A database
// without the prompt_sketch column reads with empty sketches. A missing file, a file that is not
// SQLite, or one without a `usage` table is an Error naming the path.
std::vector<UsageRecord> read_usage(const std::string& path);

}  // namespace distill::serve
