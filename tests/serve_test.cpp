// `distill serve` over loopback: the OpenAI endpoints (completions with text and token-id
// prompts, n, seed, stop, logprobs, echo; chat with logprobs and streaming), every error class
// with its status and body (and the server still serving afterwards), per-key rate limits with
// Retry-After, batching of concurrent requests, and the usage store against the request log.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sqlite3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "serve/api_keys.h"
#include "serve/api_request.h"
#include "serve/engine.h"
#include "serve/fault_injection.h"
#include "serve_process.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "model/presets.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using testing_serve::ServeProcess;

const char* kKey = "sk-test-alice-0123456789";
const char* kLimitedKey = "sk-test-bob-limited";

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("distill-serve-" + std::to_string(getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    testing_serve::save_tiny_model(*dir_ / "tiny");
    std::ofstream keys(*dir_ / "keys.txt");
    keys << "# id hash limits\n"
         << "alice " << serve::sha256_hex(kKey) << "\n"
         << "bob   " << serve::sha256_hex(kLimitedKey) << " rpm=3\n";
    keys.close();
    server_ = new ServeProcess(
        {"--model", (*dir_ / "tiny").string(), "--api-keys", (*dir_ / "keys.txt").string(),
         "--usage-db", (*dir_ / "usage.db").string(), "--max-tokens-limit", "64", "--max-n", "4",
         "--max-body-bytes", "20000"},
        (*dir_ / "serve.log").string());
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }
  static httplib::Headers auth(const std::string& key = kKey) {
    return {{"Authorization", "Bearer " + key}};
  }
  // POST with the default key; returns (status, parsed body).
  static std::pair<int, json> post(const std::string& path, const json& body,
                                   const httplib::Headers& headers = auth()) {
    auto c = client();
    auto res = c.Post(path.c_str(), headers, body.dump(), "application/json");
    if (!res) return {-1, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  static void expect_error(int status, const json& body, int want_status,
                           const std::string& want_param = "") {
    EXPECT_EQ(status, want_status) << body.dump();
    ASSERT_TRUE(body.is_object() && body.contains("error")) << body.dump();
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_FALSE(body["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(body["error"]["type"].is_string());
    if (!want_param.empty()) {
      EXPECT_EQ(body["error"]["param"], want_param) << body.dump();
    }
  }

  static fs::path* dir_;
  static ServeProcess* server_;
};
fs::path* ServeTest::dir_ = nullptr;
ServeProcess* ServeTest::server_ = nullptr;

TEST_F(ServeTest, HealthModelsAndMetrics) {
  auto c = client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = c.Get("/v1/models", auth());
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "tiny");
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("# TYPE distill_requests_total counter"), std::string::npos);
  EXPECT_NE(metrics->body.find("distill_generated_tokens_total"), std::string::npos);
}

TEST_F(ServeTest, CompletionsAreSeededAndReportUsageAndLogprobs) {
  const json req = {{"model", "tiny"}, {"prompt", "in the beginning"}, {"max_tokens", 12}, {"n", 2},
                    {"seed", 42},      {"temperature", 1.0},           {"logprobs", 5}};
  auto [s1, a] = post("/v1/completions", req);
  auto [s2, b] = post("/v1/completions", req);
  ASSERT_EQ(s1, 200) << a.dump();
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(a["object"], "text_completion");
  ASSERT_EQ(a["choices"].size(), 2u);
  for (int i = 0; i < 2; i++) EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]);
  EXPECT_EQ(a["usage"]["prompt_tokens"], 16);  // byte-level: one token per byte
  EXPECT_EQ(a["usage"]["completion_tokens"], 24);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "length");
  const json& lp = a["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 12u);
  ASSERT_EQ(lp["top_logprobs"].size(), 12u);
  for (size_t t = 0; t < 12; t++) {
    EXPECT_LE(lp["token_logprobs"][t].get<double>(), 0.0);
    EXPECT_GE(lp["top_logprobs"][t].size(), 1u);
    EXPECT_LE(lp["top_logprobs"][t].size(), 5u);
  }
  // A different seed samples different text (the model is peaked but not that peaked).
  json other = req;
  other["seed"] = 43;
  other["temperature"] = 2.0;
  auto [s3, c] = post("/v1/completions", other);
  ASSERT_EQ(s3, 200);
  EXPECT_NE(c["choices"][0]["text"], a["choices"][0]["text"]);
}

TEST_F(ServeTest, GreedyTokenIdsEchoAndStop) {
  // Token-id prompt ("abc" in bytes) at temperature 0: the chosen token is the top-1 entry.
  const json ids = json::array({97, 98, 99});
  auto [s, g] = post("/v1/completions", {{"model", "tiny"},
                                         {"prompt", ids},
                                         {"max_tokens", 10},
                                         {"temperature", 0},
                                         {"logprobs", 2},
                                         {"echo", true}});
  ASSERT_EQ(s, 200) << g.dump();
  const std::string text = g["choices"][0]["text"];
  ASSERT_EQ(text.rfind("abc", 0), 0u) << "echo puts the prompt first: " << text;
  const json& lp = g["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 13u);  // 3 prompt + 10 generated
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  for (size_t t = 1; t < 13; t++) EXPECT_TRUE(lp["token_logprobs"][t].is_number());
  for (size_t t = 3; t < 13; t++) {
    double best = -1e30;
    for (auto& [k, v] : lp["top_logprobs"][t].items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), best, 1e-6) << "greedy picks the top-1";
  }
  // A stop string taken from the greedy text (its first ASCII letter after the start) cuts the
  // text right before its first occurrence.
  const std::string completion = text.substr(3);
  size_t at = 1;
  while (at < completion.size() && !std::isalnum(static_cast<unsigned char>(completion[at]))) at++;
  ASSERT_LT(at, completion.size()) << "no ASCII letter in the greedy text: " << completion;
  const std::string stop = completion.substr(at, 1);
  auto [s2, cut] = post("/v1/completions", {{"model", "tiny"},
                                            {"prompt", ids},
                                            {"max_tokens", 10},
                                            {"temperature", 0},
                                            {"stop", {stop}}});
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(cut["choices"][0]["text"], completion.substr(0, completion.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

// Splits an SSE body into its data payloads.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
  return out;
}

TEST_F(ServeTest, ChatStreamsTheSameTextAsTheWholeAnswer) {
  const json messages = json::array({{{"role", "system"}, {"content", "be brief"}},
                                     {{"role", "user"}, {"content", "say something"}}});
  const json req = {{"model", "tiny"},  {"messages", messages}, {"max_tokens", 20},
                    {"temperature", 0}, {"logprobs", true},     {"top_logprobs", 3}};
  auto [s, whole] = post("/v1/chat/completions", req);
  ASSERT_EQ(s, 200) << whole.dump();
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  const json& content = whole["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 20u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 3u);
  EXPECT_TRUE(content[0]["bytes"].is_array());

  json sreq = req;
  sreq["stream"] = true;
  sreq["stream_options"] = {{"include_usage", true}};
  auto c = client();
  auto res = c.Post("/v1/chat/completions", auth(), sreq.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  const auto events = sse_data(res->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  size_t lp_tokens = 0;
  std::string finish;
  json usage;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    const json e = json::parse(events[i]);
    if (e.contains("usage") && !e["usage"].is_null()) usage = e["usage"];
    if (e["choices"].empty()) continue;
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const json& ch = e["choices"][0];
    if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    if (ch["logprobs"].is_object()) lp_tokens += ch["logprobs"]["content"].size();
    if (ch["finish_reason"].is_string()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(lp_tokens, 20u);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 20);
}

TEST_F(ServeTest, BadRequestsGetTheRightStatusAndTheServerKeepsServing) {
  auto c = client();
  auto malformed =
      c.Post("/v1/completions", auth(), "{\"model\": \"tiny\", \"prompt\": ", "application/json");
  ASSERT_TRUE(malformed);
  expect_error(malformed->status, json::parse(malformed->body), 400);
  {
    auto [s, b] =
        post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", "8"}});
    expect_error(s, b, 400, "max_tokens");
  }
  {
    auto [s, b] =
        post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 100000}});
    expect_error(s, b, 400, "max_tokens");
  }
  {
    auto [s, b] = post("/v1/chat/completions", {{"model", "tiny"}, {"messages", "hello"}});
    expect_error(s, b, 400, "messages");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"n", 99}});
    expect_error(s, b, 400, "n");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"logprobs", 21}});
    expect_error(s, b, 400, "logprobs");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", json::array({97, 300})}});
    expect_error(s, b, 400, "prompt");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"bogus", 1}});
    expect_error(s, b, 400, "bogus");
  }
  {
    // 150 prompt bytes + 64 > the 160-token context.
    auto [s, b] = post("/v1/completions",
                       {{"model", "tiny"}, {"prompt", std::string(150, 'a')}, {"max_tokens", 64}});
    expect_error(s, b, 400, "max_tokens");
    EXPECT_EQ(b["error"]["code"], "context_length_exceeded");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "gpt-9"}, {"prompt", "x"}});
    expect_error(s, b, 404, "model");
    EXPECT_EQ(b["error"]["code"], "model_not_found");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}, {});
    expect_error(s, b, 401);
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}, auth("sk-wrong"));
    expect_error(s, b, 401);
    EXPECT_EQ(b["error"]["code"], "invalid_api_key");
  }
  {
    auto [s, b] = post("/v1/completions", {{"model", "tiny"}, {"prompt", std::string(30000, 'a')}});
    expect_error(s, b, 413);
  }
  {
    auto res = c.Get("/v1/nothing-here", auth());
    ASSERT_TRUE(res);
    expect_error(res->status, json::parse(res->body), 404);
  }
  // Still serving.
  auto [s, ok] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "ok"}, {"max_tokens", 4}});
  EXPECT_EQ(s, 200);
  EXPECT_EQ(ok["usage"]["completion_tokens"], 4);
}

TEST_F(ServeTest, PerKeyRequestLimitAnswers429WithRetryAfter) {
  auto c = client();
  const json req = {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 1}};
  for (int i = 0; i < 3; i++) {
    auto res = c.Post("/v1/completions", auth(kLimitedKey), req.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << i;
  }
  auto res = c.Post("/v1/completions", auth(kLimitedKey), req.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429);
  const int retry = std::stoi(
      res->get_header_value("Retry-After", 0).empty() ? "0" : res->get_header_value("Retry-After"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 60);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "rate_limit_exceeded");
  // Other keys are not limited by bob's use.
  auto other = c.Post("/v1/completions", auth(), req.dump(), "application/json");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
}

TEST_F(ServeTest, AClientLeavingMidStreamIsRecordedAndTheServerGoesOn) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // 4 x 64 chunks: still streaming when the client hangs up right after the first bytes.
  const std::string body = json{{"model", "tiny"}, {"prompt", "stream me"}, {"max_tokens", 64},
                                {"n", 4}, {"stream", true}}.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                              std::string(kKey) + "\r\nContent-Type: application/json\r\n" +
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, request.data(), request.size()), ssize_t(request.size()));
  char buf[256];
  ASSERT_GT(read(fd, buf, sizeof buf), 0);  // the stream has started
  close(fd);
  // The server notices when its next write fails, cancels the request and records it as 499.
  bool recorded = false;
  for (int i = 0; i < 100 && !recorded; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    recorded = client().Get("/metrics")->body.find("status=\"499\"") != std::string::npos;
  }
  EXPECT_TRUE(recorded);
  auto [s, ok] = post("/v1/completions", {{"model", "tiny"}, {"prompt", "next"}, {"max_tokens", 2}});
  EXPECT_EQ(s, 200);
}

int64_t metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + name.size() + 2));
}

// A pass is a decode step: concurrent requests share steps, so the steps are fewer than the
// tokens they sampled (one per sequence per step: sequential decoding would take as many steps
// as tokens).
TEST_F(ServeTest, ConcurrentRequestsShareEnginePasses) {
  auto c = client();
  const std::string before = c.Get("/metrics")->body;
  const int64_t passes0 = metric(before, "distill_engine_passes_total");
  const int64_t tokens0 = metric(before, "distill_generated_tokens_total");
  const int clients = 12;
  std::vector<std::thread> threads;
  std::vector<int> status(clients, 0);
  for (int i = 0; i < clients; i++)
    threads.emplace_back([&, i] {
      auto [s, b] = post("/v1/completions", {{"model", "tiny"},
                                             {"prompt", "batch " + std::to_string(i)},
                                             {"max_tokens", 48},
                                             {"temperature", 0}});
      status[size_t(i)] = s;
    });
  for (auto& t : threads) t.join();
  for (int s : status) EXPECT_EQ(s, 200);
  const std::string after = c.Get("/metrics")->body;
  const int64_t passes = metric(after, "distill_engine_passes_total") - passes0;
  const int64_t tokens = metric(after, "distill_generated_tokens_total") - tokens0;
  EXPECT_GT(passes, 0);
  EXPECT_EQ(tokens, clients * 48);
  EXPECT_LT(passes, tokens) << "concurrent requests were not batched together: " << passes
                                << " steps for " << tokens << " tokens";
}

TEST_F(ServeTest, UsageStoreMatchesTheRequestLogAndKeysAreNeverLogged) {
  // A request of our own so the store is not empty whatever ran before.
  auto [s, b] = post("/v1/chat/completions", {{"model", "tiny"},
                                              {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                              {"max_tokens", 3},
                                              {"logprobs", true}});
  ASSERT_EQ(s, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((*dir_ / "usage.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  auto query = [&](const char* sql) {
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  };
  const int64_t rows = query("SELECT COUNT(*) FROM usage");
  const int64_t chat_rows = query(
      "SELECT COUNT(*) FROM usage WHERE endpoint='/v1/chat/completions' AND key_id='alice' AND "
      "logprobs=0 AND tokens_out=3 AND status=200 AND length(prompt_sha256)=64");
  sqlite3_close(db);
  std::ifstream log(*dir_ / "serve.log");
  std::stringstream ss;
  ss << log.rdbuf();
  const std::string text = ss.str();
  int64_t lines = 0;
  for (size_t at = text.find(" serve: request "); at != std::string::npos;
       at = text.find(" serve: request ", at + 1))
    lines++;
  EXPECT_GT(rows, 0);
  EXPECT_EQ(rows, lines);
  EXPECT_GE(chat_rows, 1);
  EXPECT_EQ(text.find(kKey), std::string::npos);
  EXPECT_EQ(text.find(kLimitedKey), std::string::npos);
  EXPECT_NE(text.find("key=alice"), std::string::npos);
}

TEST(ServeUnits, Utf8PrefixHoldsBackACutCharacter) {
  using serve::complete_utf8_prefix;
  EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(complete_utf8_prefix("a\xC3"), 1u);  // é cut after its lead byte
  EXPECT_EQ(complete_utf8_prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(complete_utf8_prefix("\xE2\x82"), 0u);           // € missing its last byte
  EXPECT_EQ(complete_utf8_prefix("x\xF0\x9F\x98\x80"), 5u);  // a whole emoji
  EXPECT_EQ(complete_utf8_prefix("x\xF0\x9F\x98"), 1u);
  EXPECT_EQ(complete_utf8_prefix("\x80\x80"), 2u);  // stray continuation bytes pass
}

TEST(ServeUnits, RequestLimitsAndRateWindow) {
  serve::RequestLimits limits;
  limits.max_tokens = 10;
  EXPECT_THROW(
      serve::parse_api_request(R"({"model":"m","prompt":"x","max_tokens":11})", false, limits),
      serve::ApiError);
  const serve::ApiRequest r = serve::parse_api_request(
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":4})",
      true, limits);
  EXPECT_EQ(r.logprobs, 4);
  try {
    serve::parse_api_request(R"({"model":"m","prompt":"x","stop":["a","b","c","d","e"]})", false,
                             limits);
    ADD_FAILURE() << "five stop sequences were accepted";
  } catch (const serve::ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "stop");
  }
  serve::RateLimiter limiter(2, 0);
  serve::ApiKey key{"k", 0, 0};
  EXPECT_FALSE(limiter.admit(key, nullptr).has_value());
  EXPECT_FALSE(limiter.admit(key, nullptr).has_value());
  std::string kind;
  const auto wait = limiter.admit(key, &kind);
  ASSERT_TRUE(wait);
  EXPECT_GT(*wait, 55.0);
  EXPECT_LE(*wait, 60.0);
  EXPECT_EQ(kind, "requests");
  serve::ApiKey tokens{"t", 0, 100};
  EXPECT_FALSE(limiter.admit(tokens, nullptr).has_value());
  limiter.add_tokens(tokens, 150);
  EXPECT_TRUE(limiter.admit(tokens, &kind).has_value());
  EXPECT_EQ(kind, "tokens");
}

TEST(ServeUnits, FaultBurstsComeInARow) {
  serve::FaultOptions o = serve::parse_fault_spec("429=0.2,429_burst=3,seed=9");
  EXPECT_EQ(o.rate_limit_burst, 3);
  serve::FaultInjector f(o);
  std::string seq;
  for (int i = 0; i < 400; i++) seq += f.draw() == serve::Fault::RateLimit ? 'R' : '.';
  // Every run of 429s is a multiple of 3 long (back-to-back bursts merge).
  size_t runs = 0;
  for (size_t i = 0; i < seq.size();) {
    if (seq[i] != 'R') {
      i++;
      continue;
    }
    size_t j = i;
    while (j < seq.size() && seq[j] == 'R') j++;
    if (j < seq.size()) {
      EXPECT_EQ((j - i) % 3, 0u) << seq;
    }
    runs++;
    i = j;
  }
  EXPECT_GT(runs, 5u);
  EXPECT_THROW(serve::parse_fault_spec("429=0.5,500=0.6"), Error);
  EXPECT_THROW(serve::parse_fault_spec("teapot=0.1"), Error);
}

// The engine in process (continuous batching): the tiny served model and the byte tokenizer.
class ServeEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = std::make_unique<Model>(testing_serve::tiny_model_config());
    model_->init_weights(7);
    for (size_t i = 0; i < model_->num_params(); i++) model_->params()[i] *= 4.0f;
  }
  static serve::ChoiceSpec spec(const std::string& prompt, int max_tokens, uint64_t seed,
                                float temperature = 0.9f) {
    serve::ChoiceSpec c;
    c.prompt = ByteTokenizer::encode(prompt);
    c.max_tokens = max_tokens;
    c.temperature = temperature;
    c.top_p = 0.95f;
    c.seed = seed;
    c.logprobs = 3;
    return c;
  }
  static std::shared_ptr<serve::EngineJob> job(std::vector<serve::ChoiceSpec> choices) {
    auto j = std::make_shared<serve::EngineJob>();
    j->choices = std::move(choices);
    return j;
  }
  std::unique_ptr<Model> model_;
  ByteLevelTokenizer tok_;
};

// A request submitted while a long generation runs gets its first streamed token after a few
// steps, long before the long one ends. (Per-pass batching ran it in the next pass, after the long
// generation's last token: this failed.)
TEST_F(ServeEngine, ALateRequestStreamsBeforeALongOneFinishes) {
  serve::Engine engine(*model_, tok_, 4, 160);
  auto long_job = job({spec("a long story: ", 140, 1)});
  auto late = job({spec("late", 4, 2)});
  int long_tokens = 0;  // engine thread only
  bool submitted = false, long_done = false;
  int long_tokens_at_late_first = -1;
  bool long_done_at_late_first = true;
  long_job->on_delta = [&](const serve::StreamDelta& d) {
    long_tokens += int(d.tokens.size());
    if (!submitted) {
      submitted = true;
      ASSERT_TRUE(engine.submit(late));
    }
    if (!d.finish_reason.empty()) long_done = true;
  };
  late->on_delta = [&](const serve::StreamDelta& d) {
    if (long_tokens_at_late_first < 0 && !d.tokens.empty()) {
      long_tokens_at_late_first = long_tokens;
      long_done_at_late_first = long_done;
    }
  };
  ASSERT_TRUE(engine.submit(long_job));
  const auto& a = long_job->wait();
  const auto& b = late->wait();
  EXPECT_EQ(a[0].tokens.size(), 140u);
  EXPECT_EQ(b[0].tokens.size(), 4u);
  EXPECT_FALSE(long_done_at_late_first);
  EXPECT_GT(long_tokens_at_late_first, 0);
  EXPECT_LT(long_tokens_at_late_first, 20) << "the late request waited for the long one";
}

// A request admitted while another decodes gets its first token from a step of its own (one more
// engine pass than the other needs alone: its later tokens ride in the other's steps), and both
// give the tokens they give alone.
TEST_F(ServeEngine, ANewRequestsFirstTokenHasAStepOfItsOwn) {
  auto alone = [&](const serve::ChoiceSpec& c, int64_t* passes) {
    serve::Engine engine(*model_, tok_, 4, 160);
    auto j = job({c});
    EXPECT_TRUE(engine.submit(j));
    std::vector<serve::ChoiceResult> r = j->wait();
    *passes = engine.stats().passes;
    return r;
  };
  const serve::ChoiceSpec long_spec = spec("already running: ", 60, 1),
                          late_spec = spec("late", 6, 2);
  int64_t passes_long = 0, passes_late = 0;
  const auto want_long = alone(long_spec, &passes_long);
  const auto want_late = alone(late_spec, &passes_late);
  serve::Engine engine(*model_, tok_, 4, 160);
  auto running = job({long_spec});
  auto late = job({late_spec});
  int seen = 0;
  bool submitted = false;
  running->on_delta = [&](const serve::StreamDelta& d) {
    seen += int(d.tokens.size());
    if (seen >= 10 && !submitted) {
      submitted = true;
      ASSERT_TRUE(engine.submit(late));
    }
  };
  ASSERT_TRUE(engine.submit(running));
  const auto& got_long = running->wait();
  const auto& got_late = late->wait();
  ASSERT_TRUE(submitted);
  EXPECT_EQ(got_long[0].text, want_long[0].text);
  EXPECT_EQ(got_late[0].text, want_late[0].text);
  EXPECT_EQ(engine.stats().passes, passes_long + 1);
}

// A model whose vocabulary is padded past its tokenizer's (as many HF checkpoints are: Qwen2.5's
// 151936 for 151665 tokens) never samples the padding ids, which have no text: before, one such
// id failed the request with "id 280 is outside the vocabulary of 256".
TEST_F(ServeEngine, PaddedVocabularyIdsAreNeverSampled) {
  ModelConfig c = testing_serve::tiny_model_config();
  c.vocab_size = 320;
  Model padded(c);
  padded.init_weights(3);
  for (size_t i = 0; i < padded.num_params(); i++) padded.params()[i] *= 4.0f;
  serve::Engine engine(padded, tok_, 4, 160);
  std::vector<serve::ChoiceSpec> choices;
  for (uint64_t seed = 1; seed <= 4; seed++) {
    serve::ChoiceSpec s = spec("padding", 50, seed, 1.5f);
    s.top_p = 1.0f;
    s.logprobs = 20;
    s.score_prompt = seed == 1;  // echo + logprobs: the prompt's alternatives too
    choices.push_back(s);
  }
  auto j = job(choices);
  ASSERT_TRUE(engine.submit(j));
  const auto& r = j->wait();
  ASSERT_EQ(r[0].prompt_tokens.size(), 6u);
  for (const serve::TokenInfo& t : r[0].prompt_tokens)
    for (const serve::TopEntry& alt : t.top) EXPECT_LT(alt.id, 256);
  for (const serve::ChoiceResult& choice : r) {
    EXPECT_EQ(choice.tokens.size(), 50u);
    for (const serve::TokenInfo& t : choice.tokens) {
      EXPECT_LT(t.id, 256);
      for (const serve::TopEntry& alt : t.top) EXPECT_LT(alt.id, 256);
    }
  }
}

// top_p cuts to the nucleus: at top_p 0.001 only the most likely token is left, so sampling at
// temperature 1 gives the greedy tokens, whatever the seed; at top_p 1 it does not.
TEST_F(ServeEngine, TopPSamplesFromTheNucleusOnly) {
  serve::Engine engine(*model_, tok_, 4, 160);
  auto greedy = job({spec("nucleus", 40, 1, 0.0f)});
  ASSERT_TRUE(engine.submit(greedy));
  const auto ids = [](const serve::ChoiceResult& r) {
    std::vector<int32_t> out;
    for (const serve::TokenInfo& t : r.tokens) out.push_back(t.id);
    return out;
  };
  const std::vector<int32_t> want = ids(greedy->wait()[0]);
  for (uint64_t seed : {3u, 4u}) {
    serve::ChoiceSpec narrow = spec("nucleus", 40, seed, 1.0f), wide = narrow;
    narrow.top_p = 0.001f;
    wide.top_p = 1.0f;
    auto a = job({narrow, wide});
    ASSERT_TRUE(engine.submit(a));
    const auto& r = a->wait();
    EXPECT_EQ(ids(r[0]), want) << "seed " << seed;
    EXPECT_NE(ids(r[1]), want) << "seed " << seed;
  }
}

// A seeded choice (temperature, top_p, logprobs, a prompt prefilled in chunks of 4) gives the same
// tokens, text and log-probabilities alone as while other requests join and leave the batch
// around it.
TEST_F(ServeEngine, SeededOutputsDoNotDependOnWhoElseIsRunning) {
  DecoderOptions o;
  o.prefill_chunk = 4;
  const serve::ChoiceSpec seeded = spec("The seeded request", 60, 42);
  std::vector<serve::ChoiceResult> alone;
  {
    serve::Engine engine(*model_, tok_, 4, 160, 256, nullptr, o);
    auto j = job({seeded});
    ASSERT_TRUE(engine.submit(j));
    alone = j->wait();
  }
  serve::Engine engine(*model_, tok_, 4, 160, 256, nullptr, o);
  auto first = job({spec("already running", 100, 7, 1.0f)});
  auto target = job({seeded});
  auto joiner = job({spec("joins", 5, 8), spec("and leaves", 9, 9)});
  auto later = job({spec("a later one with a longer prompt", 30, 10)});
  int target_tokens = 0, target_tokens_at_joiner_end = -1;
  bool target_sent = false, others_sent = false, first_done = false;
  bool first_running_at_target = false;
  first->on_delta = [&](const serve::StreamDelta& d) {
    if (!target_sent) {
      target_sent = true;
      ASSERT_TRUE(engine.submit(target));
    }
    if (!d.finish_reason.empty()) first_done = true;
  };
  target->on_delta = [&](const serve::StreamDelta& d) {
    target_tokens += int(d.tokens.size());
    if (!d.tokens.empty() && !first_done) first_running_at_target = true;
    if (target_tokens >= 10 && !others_sent) {
      others_sent = true;
      ASSERT_TRUE(engine.submit(joiner));
      ASSERT_TRUE(engine.submit(later));
    }
  };
  joiner->on_delta = [&](const serve::StreamDelta& d) {
    if (!d.finish_reason.empty()) target_tokens_at_joiner_end = target_tokens;
  };
  ASSERT_TRUE(engine.submit(first));
  const auto& got = target->wait();
  first->wait();
  joiner->wait();
  later->wait();
  EXPECT_TRUE(first_running_at_target) << "the target did not run alongside the first request";
  EXPECT_TRUE(others_sent);
  EXPECT_LT(target_tokens_at_joiner_end, 60) << "the joiner did not leave while the target ran";
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].tokens.size(), alone[0].tokens.size());
  EXPECT_EQ(got[0].text, alone[0].text);
  for (size_t t = 0; t < got[0].tokens.size(); t++) {
    EXPECT_EQ(got[0].tokens[t].id, alone[0].tokens[t].id) << t;
    EXPECT_NEAR(got[0].tokens[t].logprob, alone[0].tokens[t].logprob, 1e-5) << t;
    ASSERT_EQ(got[0].tokens[t].top.size(), 3u);
  }
}

// A KV pool of 4 blocks of 16 positions holds one of these sequences (10 + 40 positions) at a
// time: the others wait for admission (each starts after the previous one ended) and decode what
// they decode alone; a request larger than the whole pool fails with a clear error and the engine
// goes on serving.
TEST_F(ServeEngine, AFullKvPoolMakesAdmissionWait) {
  DecoderOptions o;
  o.kv.block_size = 16;
  o.kv.blocks = 4;
  serve::Engine engine(*model_, tok_, 4, 160, 256, nullptr, o);
  EXPECT_EQ(engine.pool_positions(), 64);
  std::vector<std::shared_ptr<serve::EngineJob>> jobs;
  std::vector<int> done_before_first(3, -1);
  std::atomic<int> done{0};
  for (int i = 0; i < 3; i++) {
    jobs.push_back(job({spec("prompt #" + std::to_string(i) + "!", 40, uint64_t(i))}));
    jobs.back()->on_delta = [&, i](const serve::StreamDelta& d) {
      if (done_before_first[size_t(i)] < 0 && !d.tokens.empty())
        done_before_first[size_t(i)] = done.load();
      if (!d.finish_reason.empty()) done++;
    };
  }
  for (auto& j : jobs) ASSERT_TRUE(engine.submit(j));
  for (auto& j : jobs) j->wait();
  for (int i = 0; i < 3; i++) {
    const auto& r = jobs[size_t(i)]->wait();
    EXPECT_EQ(r[0].tokens.size(), 40u);
    EXPECT_EQ(done_before_first[size_t(i)], i) << "job " << i << " did not wait for the pool";
    // (Once the engine is idle: two engines must not run one model at the same time.)
    serve::Engine alone(*model_, tok_, 1, 160);
    auto again = job({spec("prompt #" + std::to_string(i) + "!", 40, uint64_t(i))});
    ASSERT_TRUE(alone.submit(again));
    EXPECT_EQ(again->wait()[0].text, r[0].text) << i;
  }
  auto big = job({spec("0123456789", 60, 3)});  // 69 positions
  ASSERT_TRUE(engine.submit(big));
  try {
    big->wait();
    FAIL() << "a request larger than the pool ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 5 KV cache blocks of 16 positions, but the whole "
                                         "pool has 4 blocks"),
              std::string::npos)
        << e.what();
  }
  auto after = job({spec("still serving", 8, 4)});
  ASSERT_TRUE(engine.submit(after));
  EXPECT_EQ(after->wait()[0].tokens.size(), 8u);
}

// Over HTTP: the KV options are validated, and a request that cannot fit the pool is a 400 that
// says so.
TEST(ServeCli, KvCacheOptions) {
  const fs::path dir = fs::temp_directory_path() / ("distill-serve-kv-" + std::to_string(getpid()));
  fs::create_directories(dir);
  testing_serve::save_tiny_model(dir / "m");
  const std::string bad = std::string(DISTILL_BINARY) + " serve --model " + (dir / "m").string() +
                          " --port 0 --kv-cache fp8 2>" + (dir / "err.txt").string();
  EXPECT_NE(std::system(bad.c_str()), 0);
  std::stringstream err;
  err << std::ifstream(dir / "err.txt").rdbuf();
  EXPECT_NE(err.str().find("unknown KV cache type 'fp8': expected f32, bf16 or f16"),
            std::string::npos)
      << err.str();
  for (const char* type : {"bf16", "f16"}) {
    ServeProcess server({"--model", (dir / "m").string(), "--kv-cache", type, "--kv-blocks", "2",
                         "--kv-block-size", "16"},
                        (dir / "serve.log").string());
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(60, 0);
    auto ok = c.Post("/v1/completions",
                     json{{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 20}}.dump(),
                     "application/json");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << ok->body;
    auto big = c.Post("/v1/completions",
                      json{{"model", "m"}, {"prompt", "hello"}, {"max_tokens", 40}}.dump(),
                      "application/json");
    ASSERT_TRUE(big);
    EXPECT_EQ(big->status, 400) << big->body;
    EXPECT_NE(big->body.find("KV cache pool holds 32"), std::string::npos) << big->body;
  }
  fs::remove_all(dir);
}

TEST(ServeCli, RefusesBadKeyFilesAndFaultSpecs) {
  const fs::path dir =
      fs::temp_directory_path() / ("distill-serve-cli-" + std::to_string(getpid()));
  fs::create_directories(dir);
  testing_serve::save_tiny_model(dir / "m");
  std::ofstream(dir / "keys.txt") << "alice sk-plaintext-key\n";
  const std::string cmd = std::string(DISTILL_BINARY) + " serve --model " + (dir / "m").string() +
                          " --port 0 --api-keys " + (dir / "keys.txt").string() + " 2>" +
                          (dir / "err.txt").string();
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::ifstream err(dir / "err.txt");
  std::stringstream ss;
  ss << err.rdbuf();
  const std::string line = ss.str();
  EXPECT_NE(line.find("error: "), std::string::npos) << line;
  EXPECT_NE(line.find("keys.txt line 1"), std::string::npos) << line;
  EXPECT_NE(line.find("SHA-256"), std::string::npos) << line;
  EXPECT_EQ(line.find("sk-plaintext-key"), std::string::npos) << "a key must never be echoed";
  const std::string faults = std::string(DISTILL_BINARY) + " serve --model " +
                             (dir / "m").string() + " --port 0 --inject-faults 429=2 2>/dev/null";
  EXPECT_NE(std::system(faults.c_str()), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distill
