#include "serve/usage_store.h"

#include <sqlite3.h>

#include "core/error.h"

namespace distill::serve {

namespace {

void exec(sqlite3* db, const char* sql, const std::string& path) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string m = message ? message : "unknown error";
    sqlite3_free(message);
    throw Error("{}: usage store: {}", path, m);
  }
}

}  // namespace

UsageStore::UsageStore(const std::string& path) : path_(path) {
  if (sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string m = db_ ? sqlite3_errmsg(db_) : "cannot open";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error("{}: cannot open the usage store: {}", path, m);
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    exec(db_, "PRAGMA journal_mode=WAL", path);
    // NORMAL: a commit survives a crash of the server (WAL), an OS crash may lose the last ones.
    exec(db_, "PRAGMA synchronous=NORMAL", path);
    exec(db_,
         "CREATE TABLE IF NOT EXISTS usage ("
         " id INTEGER PRIMARY KEY AUTOINCREMENT,"
         " key_id TEXT, time REAL NOT NULL, endpoint TEXT NOT NULL,"
         " prompt_sha256 TEXT, prompt_chars INTEGER NOT NULL,"
         " tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,"
         " logprobs INTEGER NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL)",
         path);
    exec(db_, "CREATE INDEX IF NOT EXISTS usage_key_time ON usage(key_id, time)", path);
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO usage (key_id, time, endpoint, prompt_sha256, prompt_chars,"
                           " tokens_in, tokens_out, logprobs, latency_ms, status)"
                           " VALUES (?,?,?,?,?,?,?,?,?,?)",
                           -1, &insert_, nullptr) != SQLITE_OK)
      throw Error("{}: usage store: {}", path, sqlite3_errmsg(db_));
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

UsageStore::~UsageStore() {
  sqlite3_finalize(insert_);
  sqlite3_close(db_);
}

void UsageStore::record(const UsageRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_reset(insert_);
  auto text = [&](int i, const std::string& s) {
    if (s.empty())
      sqlite3_bind_null(insert_, i);
    else
      sqlite3_bind_text(insert_, i, s.c_str(), int(s.size()), SQLITE_TRANSIENT);
  };
  text(1, r.key_id);
  sqlite3_bind_double(insert_, 2, r.time);
  text(3, r.endpoint);
  text(4, r.prompt_sha256);
  sqlite3_bind_int64(insert_, 5, r.prompt_chars);
  sqlite3_bind_int64(insert_, 6, r.tokens_in);
  sqlite3_bind_int64(insert_, 7, r.tokens_out);
  sqlite3_bind_int(insert_, 8, r.logprobs);
  sqlite3_bind_double(insert_, 9, r.latency_ms);
  sqlite3_bind_int(insert_, 10, r.status);
  if (sqlite3_step(insert_) != SQLITE_DONE)
    throw Error("{}: usage store: {}", path_, sqlite3_errmsg(db_));
}

int64_t UsageStore::count() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM usage", -1, &st, nullptr) != SQLITE_OK)
    throw Error("{}: usage store: {}", path_, sqlite3_errmsg(db_));
  int64_t n = 0;
  if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

}  // namespace distill::serve
