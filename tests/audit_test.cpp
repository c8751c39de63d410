// Harvest audit: Shapiro-Wilk against SciPy (tests/fixtures/audit_shapiro.json, written by
// tools/audit_reference.py), the MMD permutation test's calibration and power, PRADA distances,
// a small simulated mix (harvesters flagged, benign not), the usage store's migration from the
// schema without prompt sketches, clear errors for bad databases, and `distill serve` writing
// the prompt sketches the audit reads.
#include "forensics/audit.h"

#include <gtest/gtest.h>

#include "test_support.h"
#include <httplib.h>
#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "forensics/audit_tests.h"
#include "forensics/normality.h"
#include "forensics/prompt_sketch.h"
#include "forensics/traffic_sim.h"
#include "serve/api_keys.h"
#include "serve/usage_store.h"
#include "serve_process.h"

using namespace distill;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return test_support::temp_dir("audit-" + name); }

void sql(const fs::path& db, const std::string& statement) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(h, statement.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

using test_support::error_of;

}  // namespace

TEST(AuditShapiroWilk, MatchesScipy) {
  std::ifstream in(std::string(DISTILL_FIXTURES) + "/audit_shapiro.json");
  ASSERT_TRUE(in.good());
  const auto f = nlohmann::json::parse(in);
  ASSERT_GE(f["cases"].size(), 25u);
  int64_t largest = 0;
  for (const auto& c : f["cases"]) {
    const std::vector<double> x = c["x"];
    const ShapiroWilk r = shapiro_wilk(x);
    const double w = c["w"], p = c["p"], w_double = c["w_double"];
    // W: exactly Royston's coefficients in double precision; SciPy's single-precision swilk
    // within 5e-6 (its accumulated float32 error at n = 5000 is 4.3e-6).
    EXPECT_NEAR(r.w, w_double, 1e-9 + 1e-9 * (1.0 - w_double)) << c["name"];
    EXPECT_NEAR(r.w, w, 5e-6) << c["name"];
    // p: Royston's transformation of SciPy's own W gives SciPy's p (float32: ~1e-5 relative).
    EXPECT_NEAR(shapiro_wilk_p_value(w, r.n), p, 1e-4 * p + 1e-12) << c["name"];
    // And the p we report for our W is close to SciPy's (how close depends on dW above).
    EXPECT_NEAR(r.p_value, p, 0.05 * p + 1e-12) << c["name"] << " W=" << r.w;
    EXPECT_EQ(r.n, int64_t(x.size()));
    largest = std::max(largest, r.n);
  }
  EXPECT_EQ(largest, 5000);
}

TEST(AuditShapiroWilk, RejectsBadSamples) {
  EXPECT_NE(error_of([] { shapiro_wilk({1.0, 2.0}); }).find("at least 3"), std::string::npos);
  EXPECT_NE(error_of([] { shapiro_wilk(std::vector<double>(5001, 0.5)); }).find("5000"),
            std::string::npos);
  EXPECT_NE(error_of([] { shapiro_wilk({2.0, 2.0, 2.0, 2.0}); }).find("equal"), std::string::npos);
}

TEST(AuditShapiroWilk, NullPValuesAreRoughlyUniform) {
  // Normal samples: about 5% of p-values below 0.05 (binomial sd over 400 tests: 1.1%).
  Rng rng(7);
  int below = 0;
  for (int t = 0; t < 400; t++) {
    std::vector<double> x(60);
    for (double& v : x) v = rng.normal();
    below += shapiro_wilk(x).p_value < 0.05;
  }
  EXPECT_GE(below, 8);
  EXPECT_LE(below, 36);
}

namespace {

// Distance matrix of two 1-D samples.
std::vector<double> distances(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> all = x;
  all.insert(all.end(), y.begin(), y.end());
  std::vector<double> d(all.size() * all.size());
  for (size_t i = 0; i < all.size(); i++)
    for (size_t j = 0; j < all.size(); j++) d[i * all.size() + j] = std::fabs(all[i] - all[j]);
  return d;
}

}  // namespace

TEST(AuditMmd, SameDistributionGivesLargePValuesAndShiftSmallOnes) {
  Rng rng(11);
  int small_null = 0;
  double sum_null = 0.0;
  const int tests = 100;
  for (int t = 0; t < tests; t++) {
    std::vector<double> x(40), y(40);
    for (double& v : x) v = rng.normal();
    for (double& v : y) v = rng.normal();
    const MmdResult m = mmd_permutation_test(distances(x, y), 40, 99, uint64_t(t));
    EXPECT_EQ(m.permutations, 99);
    EXPECT_EQ(m.nx, 40);
    EXPECT_EQ(m.ny, 40);
    sum_null += m.p_value;
    small_null += m.p_value <= 0.05;
  }
  // Uniform p-values: mean 0.5 (sd of the mean 0.03), about 5 of 100 at or below 0.05.
  EXPECT_NEAR(sum_null / tests, 0.5, 0.1);
  EXPECT_LE(small_null, 13);
  for (int t = 0; t < 10; t++) {
    std::vector<double> x(40), y(40);
    for (double& v : x) v = rng.normal() + 1.5;
    for (double& v : y) v = rng.normal();
    const MmdResult m = mmd_permutation_test(distances(x, y), 40, 199, uint64_t(t));
    EXPECT_NEAR(m.p_value, 1.0 / 200.0, 1e-12);  // no permutation beats the true split
    EXPECT_GT(m.mmd2, 0.0);
  }
}

TEST(AuditPrada, MinimumDistancesInArrivalOrder) {
  auto vec = [](std::vector<int32_t> ids) {
    SparseVec v;
    v.ids = ids;
    v.w.assign(ids.size(), 1.0 / std::sqrt(double(ids.size())));
    return v;
  };
  const SparseVec a = vec({1, 2}), b = vec({1, 2}), c = vec({3}), d = vec({1, 3});
  EXPECT_NEAR(sparse_distance(a, c), std::sqrt(2.0), 1e-6);
  const auto m = prada_min_distances({&a, &b, &c, &d});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_NEAR(m[0], 0.0, 1e-6);                              // b repeats a
  EXPECT_NEAR(m[1], std::sqrt(2.0), 1e-6);                   // c is new
  EXPECT_NEAR(m[2], std::sqrt(2.0 - std::sqrt(2.0)), 1e-6);  // d: half-way to c and to a
}

TEST(AuditSketch, WordsHashedCaseInsensitivelyAndRoundTrip) {
  const auto s = prompt_sketch("Hello, WORLD! hello-world 42");
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0], s[1 + 1]);
  EXPECT_EQ(s[1], s[3]);
  EXPECT_EQ(sketch_from_blob(sketch_to_blob(s), "x"), s);
  EXPECT_NE(error_of([] { sketch_from_blob("abc", "usage.db"); }).find("usage.db"),
            std::string::npos);
  EXPECT_EQ(prompt_sketch(std::string(5000, 'a') + " b c").size(), 3u);
  std::string many;
  for (int i = 0; i < 200; i++) many += "w ";
  EXPECT_EQ(prompt_sketch(many).size(), kSketchWords);
}

TEST(AuditSimulated, HarvestersFlaggedBenignNot) {
  const fs::path dir = temp_dir("mix");
  TrafficSimOptions so;
  so.out = (dir / "usage.db").string();
  so.benign = 120;
  so.harvesters = 8;  // per style: one sybil group of 8
  so.days = 5;
  so.seed = 5;
  const TrafficSimSummary sum = simulate_traffic(so);
  EXPECT_EQ(sum.benign, 120);
  EXPECT_EQ(sum.harvesters, int(8 * traffic_styles().size()));
  EXPECT_THROW(simulate_traffic(so), Error);  // never overwrites

  AuditOptions ao;
  ao.usage = so.out;
  ao.mmd_permutations = 99;
  const AuditResult r = run_audit(ao);
  std::ifstream in(sum.truth_path);
  const auto truth = nlohmann::json::parse(in)["accounts"];
  std::map<std::string, std::pair<int, int>> rate;  // class -> flagged, total
  for (const AccountAudit& a : r.accounts) {
    const auto& t = truth.at(a.key_id);
    const std::string cls = t["kind"] == "harvester" ? t["style"].get<std::string>() : "benign";
    rate[cls].first += !a.flags.empty();
    rate[cls].second++;
    EXPECT_EQ(a.flags.size(), a.reasons.size());
  }
  EXPECT_GE(rate["benign"].second, 100);  // a few simulated users sent nothing in 5 days
  EXPECT_LE(rate["benign"].first, 2) << "benign accounts flagged";
  for (const std::string& style : traffic_styles()) {
    EXPECT_EQ(rate[style].second, 8) << style;
    EXPECT_GE(rate[style].first, 7) << style << " harvesters flagged";
    if (rate[style].first < 7)  // what the missed ones looked like
      for (const AccountAudit& a : r.accounts)
        if (truth.at(a.key_id).value("style", "") == style)
          std::printf("%s ok=%lld breadth=%.2f W=%.3f logprobs=%lld flags=%zu\n", a.key_id.c_str(),
                      (long long)a.ok, a.breadth_bits, a.prada_w, (long long)a.logprob_requests,
                      a.flags.size());
  }
  // Ranked: every flagged account before every unflagged one.
  bool seen_clean = false;
  for (const AccountAudit& a : r.accounts) {
    if (a.flags.empty())
      seen_clean = true;
    else
      EXPECT_FALSE(seen_clean) << a.key_id;
  }
  const auto j = audit_to_json(r);
  EXPECT_EQ(j["accounts"].size(), r.accounts.size());
  EXPECT_TRUE(j["accounts"][0].contains("prada"));
  fs::remove_all(dir);
}

TEST(AuditUsageStore, OldSchemaOpensAndGainsTheSketchColumn) {
  const fs::path dir = temp_dir("migrate");
  const fs::path db = dir / "old.db";
  // The schema before prompt sketches, with one row.
  sql(db,
      "CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT, time REAL NOT NULL,"
      " endpoint TEXT NOT NULL, prompt_sha256 TEXT, prompt_chars INTEGER NOT NULL,"
      " tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, logprobs INTEGER NOT NULL,"
      " latency_ms REAL NOT NULL, status INTEGER NOT NULL);"
      "INSERT INTO usage (key_id, time, endpoint, prompt_sha256, prompt_chars, tokens_in,"
      " tokens_out, logprobs, latency_ms, status) VALUES ('alice', 1.0, '/v1/completions', 'ab',"
      " 5, 5, 7, -1, 3.0, 200);");
  for (int i = 0; i < 80; i++)  // enough for every test, were there sketches
    sql(db, fmt::format("INSERT INTO usage (key_id, time, endpoint, prompt_sha256, prompt_chars,"
                        " tokens_in, tokens_out, logprobs, latency_ms, status) VALUES ('carol',"
                        " {}, '/v1/completions', 'h{}', 5, 5, 7, -1, 3.0, 200)",
                        10.0 + i, i));
  auto old_rows = serve::read_usage(db.string());  // readable before migration
  ASSERT_EQ(old_rows.size(), 81u);
  EXPECT_TRUE(old_rows[0].prompt_sketch.empty());
  {
    // Without sketches the vector tests do not run (rather than seeing 80 identical queries).
    AuditOptions o;
    o.usage = db.string();
    const AuditResult r = run_audit(o);
    EXPECT_NE(r.source.find("no prompt sketches"), std::string::npos);
    ASSERT_EQ(r.accounts.size(), 2u);
    for (const AccountAudit& a : r.accounts) {
      EXPECT_EQ(a.prada_n, 0) << a.key_id;
      EXPECT_FALSE(a.mmd_tested) << a.key_id;
      EXPECT_TRUE(a.flags.empty()) << a.key_id;
    }
  }
  {
    serve::UsageStore store(db.string());  // migrates
    serve::UsageRecord r;
    r.key_id = "bob";
    r.time = 2.0;
    r.endpoint = "/v1/chat/completions";
    r.prompt_sketch = sketch_to_blob(prompt_sketch("hello there"));
    r.status = 200;
    store.record(r);
    EXPECT_EQ(store.count(), 82);
  }
  { serve::UsageStore again(db.string()); }  // reopening a migrated store is fine
  const auto rows = serve::read_usage(db.string());
  ASSERT_EQ(rows.size(), 82u);
  EXPECT_EQ(rows[0].key_id, "alice");
  EXPECT_EQ(rows[0].tokens_out, 7);
  EXPECT_EQ(rows[1].key_id, "bob");  // time order
  EXPECT_EQ(sketch_from_blob(rows[1].prompt_sketch, "x"), prompt_sketch("hello there"));
  fs::remove_all(dir);
}

TEST(AuditUsageStore, BadDatabasesAreErrorsNamingTheFile) {
  const fs::path dir = temp_dir("bad");
  AuditOptions o;
  o.usage = (dir / "missing.db").string();
  std::string e = error_of([&] { run_audit(o); });
  EXPECT_NE(e.find("missing.db"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "missing.db"));  // not created by a read

  o.usage = (dir / "text.db").string();
  std::ofstream(o.usage) << "this is not a database, just some text that is long enough\n"
                         << std::string(4096, 'x');
  e = error_of([&] { run_audit(o); });
  EXPECT_NE(e.find("text.db"), std::string::npos) << e;
  EXPECT_NE(e.find("not a database"), std::string::npos) << e;

  o.usage = (dir / "other.db").string();
  sql(o.usage, "CREATE TABLE requests (x INTEGER)");
  e = error_of([&] { run_audit(o); });
  EXPECT_NE(e.find("other.db"), std::string::npos) << e;
  EXPECT_NE(e.find("no table 'usage'"), std::string::npos) << e;

  o.usage = (dir / "partial.db").string();
  sql(o.usage, "CREATE TABLE usage (key_id TEXT, time REAL)");
  e = error_of([&] { run_audit(o); });
  EXPECT_NE(e.find("partial.db"), std::string::npos) << e;
  EXPECT_NE(e.find("endpoint"), std::string::npos) << e;

  o.usage = (dir / "missing.db").string();
  o.prada_max = 9000;
  e = error_of([&] { run_audit(o); });
  EXPECT_NE(e.find("--prada-max"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(AuditServe, ServeStoresPromptSketchesTheAuditReads) {
  const fs::path dir = temp_dir("serve");
  testing_serve::save_tiny_model(dir / "tiny");
  const std::string key = "sk-audit-test-0123456789";
  std::ofstream(dir / "keys.txt") << "carol " << serve::sha256_hex(key) << "\n";
  const std::string db = (dir / "usage.db").string();
  {
    testing_serve::ServeProcess server({"--model", (dir / "tiny").string(), "--api-keys",
                                        (dir / "keys.txt").string(), "--usage-db", db},
                                       (dir / "serve.log").string());
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(60, 0);
    for (int i = 0; i < 25; i++) {
      const nlohmann::json body = {{"model", "tiny"},
                                   {"prompt", fmt::format("Explain topic number {} to me", i)},
                                   {"max_tokens", 2},
                                   {"logprobs", 3}};
      auto res = c.Post("/v1/completions", {{"Authorization", "Bearer " + key}}, body.dump(),
                        "application/json");
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
    }
    server.stop();
  }
  const auto rows = serve::read_usage(db);
  ASSERT_EQ(rows.size(), 25u);
  // The sketch of the first prompt (serve joins prompts with a newline, which is no word).
  EXPECT_EQ(sketch_from_blob(rows[0].prompt_sketch, db),
            prompt_sketch("Explain topic number 0 to me"));
  AuditOptions o;
  o.usage = db;
  const AuditResult r = run_audit(o);
  EXPECT_EQ(r.rows_with_sketch, 25);
  ASSERT_EQ(r.accounts.size(), 1u);
  EXPECT_EQ(r.accounts[0].key_id, "carol");
  EXPECT_EQ(r.accounts[0].logprob_requests, 25);
  EXPECT_NEAR(r.accounts[0].mean_topk, 3.0, 1e-12);
  EXPECT_EQ(r.accounts[0].template_words, 5);  // explain topic number to me; not the number
  fs::remove_all(dir);
}

namespace {

// Runs the distill binary; returns (exit status, stdout + stderr).
std::pair<int, std::string> run_distill(const std::string& args) {
  const std::string cmd = std::string(DISTILL_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST(AuditCli, HelpShowsEveryDefaultAndBadInputIsAnError) {
  const auto [rc, help] = run_distill("audit --help");
  EXPECT_EQ(rc, 0);
  for (const char* option : {"--usage",
                             "--json",
                             "--top INT=20",
                             "--min-requests INT=20",
                             "--prada-max INT=1000",
                             "--prada-min INT=50",
                             "--prada-delta FLOAT=0.7",
                             "--mmd-window INT=100",
                             "--mmd-reference INT=100",
                             "--mmd-permutations INT=199",
                             "--mmd-alpha FLOAT=0",
                             "--clusters INT=32",
                             "--breadth-window INT=400",
                             "--breadth-bits FLOAT=3.7",
                             "--logprob-share FLOAT=0.5",
                             "--logprob-topk INT=10",
                             "--template-word-share FLOAT=0.5",
                             "--common-share FLOAT=0.1",
                             "--template-share FLOAT=0.5",
                             "--template-bits FLOAT=2.5",
                             "--shared-accounts INT=3",
                             "--volume FLOAT=1000",
                             "--seed UINT=1",
                             "simulate",
                             "score"})
    EXPECT_NE(help.find(option), std::string::npos) << option;
  const fs::path dir = temp_dir("cli");
  const auto [rc2, err] = run_distill("audit --usage " + (dir / "nowhere.db").string());
  EXPECT_EQ(rc2, 1);
  EXPECT_NE(err.find("error: "), std::string::npos) << err;
  EXPECT_NE(err.find("nowhere.db"), std::string::npos) << err;
  const auto [rc3, err3] =
      run_distill("audit simulate --out " + (dir / "x.db").string() + " --styles template,bogus");
  EXPECT_EQ(rc3, 1);
  EXPECT_NE(err3.find("unknown harvester style 'bogus'"), std::string::npos) << err3;
  fs::remove_all(dir);
}
