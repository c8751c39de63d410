// `distill harvest` against `distill serve` on loopback: every prompt ends up in the dataset
// exactly once with the teacher's top log-probabilities as token ids, through injected faults
// (429 bursts, 500s, malformed and truncated bodies, slow answers), the server killed and
// restarted mid-run, and the harvester itself killed with SIGKILL and rerun; the usage store's
// request count matches the server's log. Fatal answers (bad key) and the spend cap stop it
// with a clear message.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "harvest/http_client.h"
#include "harvest/openai_response.h"
#include "harvest/pacing.h"
#include "serve/api_keys.h"
#include "serve_process.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using testing_serve::ServeProcess;

const char* kKey = "sk-harvest-test-key";

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t count_of(const std::string& text, const std::string& needle) {
  int64_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
  return n;
}

int64_t usage_rows(const fs::path& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return -1;
  sqlite3_stmt* st = nullptr;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM usage", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

class HarvestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("distill-harvest-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
            std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    model_ = testing_serve::save_tiny_model(dir_ / "teacher");
    std::ofstream(dir_ / "keys.txt") << "harvester " << serve::sha256_hex(kKey) << "\n";
    setenv("DISTILL_TEST_KEY", kKey, 1);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_prompts(int n) {
    std::ofstream out(dir_ / "prompts.jsonl");
    for (int i = 0; i < n; i++) {
      const std::string id = fmt::format("q{}", i);
      if (i % 3 == 0)
        out << json{{"id", id},
                    {"messages",
                     {{{"role", "user"}, {"content", fmt::format("tell me about {}", i)}}}}}
                   .dump()
            << "\n";
      else
        out << json{{"id", id}, {"prompt", fmt::format("once upon a time {}", i)}}.dump() << "\n";
    }
    return (dir_ / "prompts.jsonl").string();
  }

  std::vector<std::string> serve_args(const std::string& usage_db, const std::string& faults = "") {
    std::vector<std::string> a = {"--model",    model_,       "--model-name",
                                  "teacher",    "--api-keys", (dir_ / "keys.txt").string(),
                                  "--usage-db", usage_db};
    if (!faults.empty()) {
      a.push_back("--inject-faults");
      a.push_back(faults);
    }
    return a;
  }

  std::string harvest_cmd(int port, const std::string& prompts, const std::string& extra = "",
                          const std::string& temperature = "0.8", int concurrency = 4) {
    return std::string(DISTILL_BINARY) +
           " harvest --endpoint http://127.0.0.1:" + std::to_string(port) +
           "/v1 --model teacher --prompts " + prompts + " --out " + (dir_ / "ds").string() +
           " --api-key-env DISTILL_TEST_KEY --max-tokens 24 " +
           "--seed 5 --top-logprobs 5 --temperature " + temperature + " --concurrency " +
           std::to_string(concurrency) + " " + extra;
  }

  // Every prompt id exactly once, each record's rows matching its tokens; returns the ids.
  std::set<std::string> check_dataset(int prompts) {
    const DatasetReader r = DatasetReader::open((dir_ / "ds").string());
    EXPECT_EQ(r.size(), prompts);
    std::set<std::string> ids;
    for (int64_t i = 0; i < r.size(); i++) {
      const json j = r.record_json(i);
      EXPECT_TRUE(ids.insert(j["id"].get<std::string>()).second) << "duplicate " << j["id"];
      EXPECT_EQ(j["logprobs_mapped"], true) << j.dump();
      const DatasetEntry e = r.read(i);
      EXPECT_EQ(e.first_target, e.prompt_tokens);
      EXPECT_EQ(e.rows.rows(), int(e.tokens.size()) - e.prompt_tokens);
      EXPECT_GT(e.rows.rows(), 0);
      for (int row = 0; row < e.rows.rows(); row++) EXPECT_GE(e.rows.count(row), 1);
    }
    for (int i = 0; i < prompts; i++) EXPECT_TRUE(ids.count(fmt::format("q{}", i))) << i;
    return ids;
  }

  fs::path dir_;
  std::string model_;
};

TEST(HarvestUnits, BackoffGrowsIsCappedAndHonoursRetryAfter) {
  Rng rng(1);
  for (int i = 0; i < 50; i++) {
    const double d0 = harvest::backoff_delay(0, 1.0, 30.0, -1.0, rng);
    EXPECT_GE(d0, 0.5);
    EXPECT_LE(d0, 1.0);
    const double d3 = harvest::backoff_delay(3, 1.0, 30.0, -1.0, rng);
    EXPECT_GE(d3, 4.0);
    EXPECT_LE(d3, 8.0);
    const double capped = harvest::backoff_delay(20, 1.0, 30.0, -1.0, rng);
    EXPECT_GE(capped, 15.0);
    EXPECT_LE(capped, 30.0);
    EXPECT_GE(harvest::backoff_delay(0, 1.0, 30.0, 7.0, rng), 7.0);
  }
  EXPECT_DOUBLE_EQ(harvest::parse_retry_after(" 3"), 3.0);
  EXPECT_DOUBLE_EQ(harvest::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0);  // past
  EXPECT_LT(harvest::parse_retry_after("soon"), 0.0);
}

TEST(HarvestUnits, PacerHoldsTheRate) {
  harvest::RatePacer pacer(1200);  // 20 per second, a bucket of 1200
  std::atomic<bool> stop{false};
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 1200; i++) ASSERT_TRUE(pacer.acquire(1.0, stop));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  ASSERT_TRUE(pacer.acquire(4.0, stop));  // 4 more need ~0.2 s of draining
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(150));
  stop = true;
  EXPECT_FALSE(pacer.acquire(1000.0, stop));
}

TEST(HarvestUnits, ResponsesParseOrSayWhatIsWrong) {
  const auto chat = harvest::parse_completion_response(
      R"({"choices":[{"message":{"content":"hi"},"finish_reason":"stop","logprobs":{"content":[)"
      R"({"token":"h","logprob":-0.5,"bytes":[104],"top_logprobs":[{"token":"h","logprob":-0.5,"bytes":[104]}]}]}}],)"
      R"("usage":{"prompt_tokens":3,"completion_tokens":1}})",
      true);
  EXPECT_EQ(chat.text, "hi");
  ASSERT_EQ(chat.tokens.size(), 1u);
  EXPECT_EQ(chat.tokens[0].bytes, "h");
  EXPECT_EQ(chat.completion_tokens, 1);
  for (const char* bad :
       {"", "{\"choices\": [", "{\"choices\": []}", "{\"choices\": [{\"text\": 1}]}",
        R"({"choices":[{"text":"x","logprobs":{"tokens":["x"],"token_logprobs":[0.5]}}]})"}) {
    EXPECT_THROW(harvest::parse_completion_response(bad, false), Error) << bad;
  }
}

TEST_F(HarvestTest, StoresTheTeachersTopLogprobsAsTokenIds) {
  ServeProcess server(serve_args((dir_ / "usage.db").string()), (dir_ / "serve.log").string());
  const std::string prompts = write_prompts(9);
  ASSERT_EQ(std::system((harvest_cmd(server.port(), prompts, "--encoding exact", "0") + " 2>" +
                         (dir_ / "h.err").string())
                            .c_str()),
            0)
      << read_file(dir_ / "h.err");
  check_dataset(9);
  const DatasetReader r = DatasetReader::open((dir_ / "ds").string());
  EXPECT_EQ(r.header().k, 5);
  EXPECT_EQ(r.header().tokenizer_fingerprint, ByteTokenizer::kFingerprint);
  // Greedy: each stored token is the most likely entry of its row (exact encoding: the compact
  // one may quantize two close entries alike and order them by id), and the text round-trips.
  for (int64_t i = 0; i < r.size(); i++) {
    const DatasetEntry e = r.read(i);
    for (int row = 0; row < e.rows.rows(); row++)
      EXPECT_EQ(e.rows.ids[size_t(row) * 5], e.tokens[size_t(e.prompt_tokens + row)]);
    const json j = r.record_json(i);
    std::string completion(e.tokens.begin() + e.prompt_tokens, e.tokens.end());
    EXPECT_EQ(json(completion).dump(-1, ' ', false, json::error_handler_t::replace),
              json(j["completion"].get<std::string>()).dump());
  }
  // A rerun finds everything done and sends nothing.
  const int64_t rows = usage_rows(dir_ / "usage.db");
  ASSERT_EQ(std::system((harvest_cmd(server.port(), prompts, "--encoding exact", "0") +
                         " 2>/dev/null >/dev/null")
                            .c_str()),
            0);
  // ... and a rerun with another encoding is refused, naming the difference.
  EXPECT_NE(std::system((harvest_cmd(server.port(), prompts) + " 2>" + (dir_ / "enc.err").string() +
                         " >/dev/null")
                            .c_str()),
            0);
  EXPECT_NE(read_file(dir_ / "enc.err").find("encoding"), std::string::npos)
      << read_file(dir_ / "enc.err");
  EXPECT_EQ(usage_rows(dir_ / "usage.db"), rows);
  check_dataset(9);
}

TEST_F(HarvestTest, CompletionsModeKeepsUnmappableLogprobsAsJson) {
  // Legacy completions logprobs carry token text only: a byte-level token that is part of a UTF-8
  // character arrives as U+FFFD and maps onto no local id. Such records keep the text (re-tokenized
  // locally, no teacher rows) and the endpoint's log-probabilities as JSON; the others map.
  ServeProcess server(serve_args((dir_ / "usage.db").string()), (dir_ / "serve.log").string());
  const std::string prompts = write_prompts(6);
  ASSERT_EQ(std::system((harvest_cmd(server.port(), prompts, "--mode completions", "1.5") + " 2>" +
                         (dir_ / "h.err").string() + " >/dev/null")
                            .c_str()),
            0)
      << read_file(dir_ / "h.err");
  const DatasetReader r = DatasetReader::open((dir_ / "ds").string());
  ASSERT_EQ(r.size(), 6);
  int unmapped = 0;
  for (int64_t i = 0; i < r.size(); i++) {
    const json j = r.record_json(i);
    const DatasetEntry e = r.read(i);
    EXPECT_EQ(j["teacher"],
              "teacher @ http://127.0.0.1:" + std::to_string(server.port()) + "/v1/completions");
    if (j["logprobs_mapped"] == true) {
      EXPECT_EQ(e.rows.rows(), int(e.tokens.size()) - e.prompt_tokens);
    } else {
      unmapped++;
      EXPECT_EQ(e.first_target, int(e.tokens.size()));
      EXPECT_EQ(e.rows.rows(), 0);
      ASSERT_TRUE(j["teacher_logprobs"].is_array()) << j.dump();
      EXPECT_EQ(j["teacher_logprobs"].size(), 24u);
      EXPECT_GE(j["teacher_logprobs"][0]["top"].size(), 1u);
    }
  }
  EXPECT_GT(unmapped, 0) << "a hot byte-level model writes some non-ASCII bytes";
}

TEST_F(HarvestTest, EveryPromptExactlyOnceThroughFaultsRestartsAndKills) {
  const int n = 40;
  const std::string prompts = write_prompts(n);
  const std::string faults =
      "429=0.04,429_burst=6,500=0.1,malformed=0.06,truncated=0.06,slow=0.04,slow_ms=2500,seed=3";
  auto server = std::make_unique<ServeProcess>(serve_args((dir_ / "usage1.db").string(), faults),
                                               (dir_ / "serve1.log").string());
  const int port = server->port();
  const std::string cmd =
      harvest_cmd(port, prompts, "--timeout 1.5 --backoff 0.05 --backoff-max 0.4 --retries 40");
  auto records = [&] { return count_of(read_file(dir_ / "ds" / "records.jsonl"), "\n"); };
  auto wait_for = [&](int64_t want) {
    for (int i = 0; i < 600 && records() < want; i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };
  // The harvester in the background.
  auto start_harvest = [&](const std::string& log) {
    const pid_t pid = fork();
    if (pid == 0) {
      // exec: the harvester replaces the shell, so the pid is the harvester's.
      execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >" + log + " 2>&1").c_str(), nullptr);
      _exit(127);
    }
    return pid;
  };
  pid_t harvester = start_harvest((dir_ / "h1.log").string());
  // Kill the server mid-run and bring it back on the same port (new usage store, new log).
  wait_for(8);
  server->stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  server = std::make_unique<ServeProcess>(serve_args((dir_ / "usage2.db").string(), faults),
                                          (dir_ / "serve2.log").string(), port);
  // Kill the harvester mid-run; run it again to the end.
  wait_for(20);
  kill(harvester, SIGKILL);
  waitpid(harvester, nullptr, 0);
  const int64_t at_kill = records();
  EXPECT_LT(at_kill, n) << "the harvester finished before it could be killed";
  harvester = start_harvest((dir_ / "h2.log").string());
  int status = 0;
  waitpid(harvester, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(dir_ / "h2.log");
  check_dataset(n);
  // The faults did happen and were retried (the rerun's error counts are in its progress lines).
  const std::string h2 = read_file(dir_ / "h2.log") + read_file(dir_ / "h1.log");
  if (std::getenv("DISTILL_TEST_VERBOSE")) std::fprintf(stderr, "%s\n", h2.c_str());
  EXPECT_NE(h2.find("429:"), std::string::npos) << h2;
  EXPECT_NE(h2.find("5xx:"), std::string::npos) << h2;
  EXPECT_NE(h2.find("malformed:"), std::string::npos) << h2;
  EXPECT_NE(h2.find("connect:"), std::string::npos) << "the server's kill went unnoticed: " << h2;
  // Stopped cleanly, the second server's usage store holds exactly the requests it logged.
  EXPECT_EQ(server->stop(SIGTERM), 0);
  const int64_t logged = count_of(read_file(dir_ / "serve2.log"), " serve: request ");
  EXPECT_GT(logged, 0);
  EXPECT_EQ(usage_rows(dir_ / "usage2.db"), logged);
}

TEST_F(HarvestTest, BadKeyStopsWithTheEndpointsMessage) {
  ServeProcess server(serve_args((dir_ / "usage.db").string()), (dir_ / "serve.log").string());
  const std::string prompts = write_prompts(3);
  setenv("DISTILL_TEST_KEY", "sk-wrong", 1);
  const int rc = std::system(
      (harvest_cmd(server.port(), prompts) + " 2>" + (dir_ / "err.txt").string() + " >/dev/null")
          .c_str());
  EXPECT_NE(rc, 0);
  const std::string err = read_file(dir_ / "err.txt");
  EXPECT_NE(err.find("answered 401"), std::string::npos) << err;
  EXPECT_NE(err.find("Incorrect API key"), std::string::npos) << err;
  EXPECT_EQ(err.find("sk-wrong"), std::string::npos) << "the key must not be printed";
}

TEST_F(HarvestTest, SpendCapStopsNewRequestsAndShowsTheSpend) {
  ServeProcess server(serve_args((dir_ / "usage.db").string()), (dir_ / "serve.log").string());
  const std::string prompts = write_prompts(10);
  // $1000 per million tokens both ways: a prompt of ~20 tokens + 24 completion tokens costs about
  // $0.044, so a $0.2 cap admits a handful (the estimate assumes the full max_tokens).
  const int rc =
      std::system((harvest_cmd(server.port(), prompts,
                               "--price-input 1000 --price-output 1000 --max-cost 0.2", "0.8", 1) +
                   " 2>" + (dir_ / "err.txt").string() + " >" + (dir_ / "out.txt").string())
                      .c_str());
  EXPECT_NE(rc, 0);
  const std::string err = read_file(dir_ / "err.txt");
  EXPECT_NE(err.find("spend cap"), std::string::npos) << err;
  const DatasetReader r = DatasetReader::open((dir_ / "ds").string());
  EXPECT_GT(r.size(), 0);
  EXPECT_LT(r.size(), 10);
  double spent = 0;
  for (int64_t i = 0; i < r.size(); i++) spent += r.record_json(i)["cost"].get<double>();
  EXPECT_LE(spent, 0.2);
  EXPECT_NE(read_file(dir_ / "out.txt").find(fmt::format("spent ${:.4f}", spent)),
            std::string::npos)
      << read_file(dir_ / "out.txt");
  // Without a price the cap is refused up front.
  const int no_price = std::system((harvest_cmd(server.port(), prompts, "--max-cost 1") + " 2>" +
                                    (dir_ / "err2.txt").string() + " >/dev/null")
                                       .c_str());
  EXPECT_NE(no_price, 0);
  EXPECT_NE(read_file(dir_ / "err2.txt").find("--max-cost needs the price"), std::string::npos);
}

}  // namespace
}  // namespace distill
