// The forensics statistics against SciPy (tests/fixtures/forensics_stats.json, written by
// tools/forensics_stats_reference.py): binomial and gamma tails deep into the tail, the normal
// distribution and its quantile, Holm-Bonferroni, and the Kolmogorov-Smirnov uniformity test.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "forensics/stats.h"

using namespace distill;

namespace {

nlohmann::json fixture() {
  std::ifstream in(std::string(DISTILL_FIXTURES) + "/forensics_stats.json");
  EXPECT_TRUE(in.good());
  return nlohmann::json::parse(in);
}

// Relative tolerance on ln p: 1e-9 of |ln p| or 1e-12 absolute near ln p = 0.
void expect_log_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::fabs(want) + 1e-12) << what;
}

}  // namespace

TEST(ForensicsStats, BinomialTailMatchesScipy) {
  const auto f = fixture();
  ASSERT_GE(f["binomial_sf"].size(), 15u);
  for (const auto& c : f["binomial_sf"]) {
    const double got = log_binomial_sf(c["k"], c["n"], c["p"]);
    expect_log_close(got, c["ln_sf"], c.dump());
  }
  EXPECT_TRUE(std::isinf(log_binomial_sf(11, 10, 0.25)));
  EXPECT_EQ(log_binomial_sf(0, 10, 0.25), 0.0);
}

TEST(ForensicsStats, BinomialTailIsTheSumOfTheMassFunction) {
  // Independent of SciPy: every k of a small n against the summed mass function.
  const int n = 37;
  const double p = 0.3;
  for (int k = 0; k <= n; k++) {
    double sum = 0.0;
    for (int i = k; i <= n; i++)
      sum += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) +
                      i * std::log(p) + (n - i) * std::log(1 - p));
    EXPECT_NEAR(std::exp(log_binomial_sf(k, n, p)), sum, 1e-13 + 1e-11 * sum) << k;
  }
}

TEST(ForensicsStats, GammaTailMatchesScipy) {
  const auto f = fixture();
  for (const auto& c : f["gamma_sf"])
    expect_log_close(log_gamma_sf(c["a"], c["x"]), c["ln_sf"], c.dump());
}

TEST(ForensicsStats, NormalMatchesScipy) {
  const auto f = fixture();
  for (const auto& c : f["normal"]) {
    EXPECT_NEAR(normal_cdf(c["z"]), double(c["cdf"]), 1e-15) << c.dump();
    expect_log_close(log_normal_sf(c["z"]), c["ln_sf"], c.dump());
  }
  for (const auto& c : f["quantile"])
    EXPECT_NEAR(normal_quantile(c["p"]), double(c["z"]), 1e-9) << c.dump();
}

TEST(ForensicsStats, HolmMatchesItsDefinition) {
  const auto f = fixture();
  for (const auto& c : f["holm"]) {
    const auto got = holm_adjust(c["p"].get<std::vector<double>>());
    const auto want = c["adjusted"].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) EXPECT_NEAR(got[i], want[i], 1e-15) << c.dump();
  }
}

TEST(ForensicsStats, KolmogorovSmirnovMatchesScipy) {
  const auto f = fixture();
  for (const auto& c : f["ks"]) {
    const KsResult r = ks_uniform(c["values"].get<std::vector<double>>());
    EXPECT_NEAR(r.d, double(c["d"]), 1e-12) << c["name"];
    // SciPy's asymptotic p has no small-n correction; ours has Stephens', so they agree loosely.
    const double want = c["p"];
    EXPECT_NEAR(std::log(r.p_value), std::log(want), 0.35 * std::fabs(std::log(want)) + 0.15)
        << c["name"] << " p " << r.p_value << " vs " << want;
  }
}

TEST(ForensicsStats, ExactBinomialPValuesAreUniformUnderTheNull) {
  // P(p <= alpha) <= alpha for the exact test (discrete, so conservative but close for n = 400).
  Rng rng(3);
  const int trials = 4000, n = 400;
  int below = 0;
  for (int t = 0; t < trials; t++) {
    int g = 0;
    for (int i = 0; i < n; i++) g += rng.uniform() < 0.25;
    below += std::exp(log_binomial_sf(g, n, 0.25)) <= 0.05;
  }
  EXPECT_LE(below, int(trials * 0.05 * 1.15));
  EXPECT_GE(below, int(trials * 0.05 * 0.6));
}
