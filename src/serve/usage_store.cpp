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

// The columns of table `usage` (empty when there is no such table).
std::vector<std::string> usage_columns(sqlite3* db, const std::string& path) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA table_info(usage)", -1, &st, nullptr) != SQLITE_OK)
    throw Error("{}: usage store: {}", path, sqlite3_errmsg(db));
  std::vector<std::string> cols;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    cols.push_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
  const std::string m = sqlite3_errmsg(db);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) throw Error("{}: usage store: {}", path, m);
  return cols;
}

bool has(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v)
    if (x == s) return true;
  return false;
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
         " logprobs INTEGER NOT NULL, latency_ms REAL NOT NULL, status INTEGER NOT NULL,"
         " prompt_sketch BLOB)",
         path);
    // Databases from before the prompt sketch: add the column (old rows read as no sketch).
    if (!has(usage_columns(db_, path), "prompt_sketch"))
      exec(db_, "ALTER TABLE usage ADD COLUMN prompt_sketch BLOB", path);
    exec(db_, "CREATE INDEX IF NOT EXISTS usage_key_time ON usage(key_id, time)", path);
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO usage (key_id, time, endpoint, prompt_sha256, prompt_chars,"
                           " tokens_in, tokens_out, logprobs, latency_ms, status, prompt_sketch)"
                           " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
  insert_locked(r);
}

void UsageStore::record_all(const std::vector<UsageRecord>& rows) {
  std::lock_guard<std::mutex> lock(mu_);
  exec(db_, "BEGIN", path_);
  try {
    for (const UsageRecord& r : rows) insert_locked(r);
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  exec(db_, "COMMIT", path_);
}

void UsageStore::insert_locked(const UsageRecord& r) {
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
  if (r.prompt_sketch.empty())
    sqlite3_bind_null(insert_, 11);
  else
    sqlite3_bind_blob(insert_, 11, r.prompt_sketch.data(), int(r.prompt_sketch.size()),
                      SQLITE_TRANSIENT);
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

std::vector<UsageRecord> read_usage(const std::string& path) {
  sqlite3* db = nullptr;
  // No SQLITE_OPEN_CREATE: a missing file is an error, not a new empty database. Opening is lazy,
  // so "not a database" shows up at the first statement.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    const std::string m = db ? sqlite3_errmsg(db) : "cannot open";
    sqlite3_close(db);
    throw Error("{}: cannot open the usage store: {}", path, m);
  }
  std::vector<UsageRecord> rows;
  sqlite3_stmt* st = nullptr;
  try {
    sqlite3_busy_timeout(db, 5000);
    const std::vector<std::string> cols = usage_columns(db, path);
    if (cols.empty())
      throw Error("{}: not a usage store of distill serve: no table 'usage'", path);
    for (const char* c : {"key_id", "time", "endpoint", "prompt_sha256", "prompt_chars",
                          "tokens_in", "tokens_out", "logprobs", "latency_ms", "status"})
      if (!has(cols, c)) throw Error("{}: usage table has no column '{}'", path, c);
    const bool sketch = has(cols, "prompt_sketch");
    const std::string sql = std::string(
        "SELECT key_id, time, endpoint, prompt_sha256, prompt_chars, tokens_in, tokens_out,"
        " logprobs, latency_ms, status, ") + (sketch ? "prompt_sketch" : "NULL") +
        " FROM usage ORDER BY time, id";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw Error("{}: usage store: {}", path, sqlite3_errmsg(db));
    auto text = [&](int i) {
      const unsigned char* t = sqlite3_column_text(st, i);
      return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
    };
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      UsageRecord r;
      r.key_id = text(0);
      r.time = sqlite3_column_double(st, 1);
      r.endpoint = text(2);
      r.prompt_sha256 = text(3);
      r.prompt_chars = sqlite3_column_int64(st, 4);
      r.tokens_in = sqlite3_column_int64(st, 5);
      r.tokens_out = sqlite3_column_int64(st, 6);
      r.logprobs = sqlite3_column_int(st, 7);
      r.latency_ms = sqlite3_column_double(st, 8);
      r.status = sqlite3_column_int(st, 9);
      if (const void* b = sqlite3_column_blob(st, 10))
        r.prompt_sketch.assign(static_cast<const char*>(b), size_t(sqlite3_column_bytes(st, 10)));
      rows.push_back(std::move(r));
    }
    if (rc != SQLITE_DONE) throw Error("{}: usage store: {}", path, sqlite3_errmsg(db));
  } catch (...) {
    sqlite3_finalize(st);
    sqlite3_close(db);
    throw;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

}  // namespace distill::serve
