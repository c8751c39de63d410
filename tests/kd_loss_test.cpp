// Distillation losses against PyTorch (tools/gen_kd_fixtures.py: the definitions in float64 with
// autograd gradients): every loss, dense and sparse (tail bucket and ignore rules), T = 1 and 2,
// weighted sums, masks and a step-level normalizer.
// Tolerance: |ours - torch| <= 2e-5 * (1 + |torch|) for the loss and every logit gradient
// (ours accumulates in double from float logits).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "distill/losses.h"

namespace distill {
namespace {

struct Fixture {
  int N, V, K;
  double normalizer;
  std::vector<float> z, t, tail, top_lp, w;
  std::vector<int32_t> targets, top_ids;
  nlohmann::json cases;
  Fixture() {
    std::ifstream in(std::string(DISTILL_FIXTURES) + "/kd/cases.json");
    const auto j = nlohmann::json::parse(in);
    N = j["N"];
    V = j["V"];
    K = j["K"];
    normalizer = j["normalizer"];
    for (double v : j["student_logits"]) z.push_back(float(v));
    for (double v : j["teacher_logits"]) t.push_back(float(v));
    for (double v : j["tail_mass"]) tail.push_back(float(v));
    for (double v : j["top_logprobs"]) top_lp.push_back(float(v));
    for (double v : j["weights"]) w.push_back(float(v));
    for (int v : j["targets"]) targets.push_back(v);
    for (int v : j["top_ids"]) top_ids.push_back(v);
    cases = j["cases"];
  }
  std::vector<SparseTeacherRow> sparse() const {
    std::vector<SparseTeacherRow> rows;
    for (int n = 0; n < N; n++)
      rows.push_back({top_ids.data() + n * K, top_lp.data() + n * K, K, tail[n]});
    return rows;
  }
};

TEST(KdLoss, MatchesPyTorchForEveryLossModeAndTemperature) {
  const Fixture f;
  int checked = 0;
  for (const auto& c : f.cases) {
    const std::string mode = c["mode"];
    const KdLossSpec spec = KdLossSpec::parse(c["spec"], float(c["T"]),
                                              mode == "ignore" ? TailRule::Ignore : TailRule::Bucket);
    std::vector<float> grad(f.z.size(), 0.0f);
    KdLossResult r;
    if (mode == "dense") {
      r = kd_loss_dense(spec, f.z.data(), f.t.data(), f.targets.data(), f.w.data(), f.N, f.V,
                        f.normalizer, grad.data());
    } else {
      const auto rows = f.sparse();
      r = kd_loss_sparse(spec, f.z.data(), rows.data(), f.targets.data(), f.w.data(), f.N, f.V,
                         f.normalizer, grad.data());
    }
    const std::string what = std::string(c["spec"]) + " T=" + c["T"].dump() + " " + mode;
    const double want = c["loss"];
    EXPECT_NEAR(r.loss, want, 2e-5 * (1 + std::fabs(want))) << what;
    double worst = 0.0;
    for (size_t i = 0; i < grad.size(); i++) {
      const double g = c["grad"][i];
      worst = std::max(worst, std::fabs(grad[i] - g) / (1 + std::fabs(g)));
    }
    EXPECT_LT(worst, 2e-5) << what;
    // The masked position (weight 0) gets no gradient at all.
    for (int v = 0; v < f.V; v++) ASSERT_EQ(grad[2 * f.V + v], 0.0f) << what;
    checked++;
  }
  EXPECT_EQ(checked, 56);
}

TEST(KdLoss, GradientsAccumulateAndTermsAddUp) {
  const Fixture f;
  const KdLossSpec kl = KdLossSpec::parse("kl"), ce = KdLossSpec::parse("ce");
  const KdLossSpec both = KdLossSpec::parse("kl=1,ce=1");
  std::vector<float> g_sum(f.z.size(), 0.0f), g_both(f.z.size(), 0.0f);
  const double a = kd_loss_dense(kl, f.z.data(), f.t.data(), f.targets.data(), f.w.data(), f.N,
                                 f.V, f.normalizer, g_sum.data()).loss;
  const double b = kd_loss_dense(ce, f.z.data(), f.t.data(), f.targets.data(), f.w.data(), f.N,
                                 f.V, f.normalizer, g_sum.data()).loss;
  const KdLossResult r = kd_loss_dense(both, f.z.data(), f.t.data(), f.targets.data(),
                                       f.w.data(), f.N, f.V, f.normalizer, g_both.data());
  EXPECT_NEAR(r.loss, a + b, 1e-9);
  EXPECT_NEAR(r.per_term[int(KdLossKind::KL)], a, 1e-9);
  EXPECT_NEAR(r.per_term[int(KdLossKind::CE)], b, 1e-9);
  for (size_t i = 0; i < g_sum.size(); i++) EXPECT_NEAR(g_sum[i], g_both[i], 1e-6);
}

TEST(KdLoss, NoTargetTokensMeansZeroLossAndGradient) {
  const Fixture f;
  std::vector<float> zero_w(f.N, 0.0f), grad(f.z.size(), 0.0f);
  const KdLossSpec spec = KdLossSpec::parse("kl=0.5,ce=0.5");
  KdLossResult r = kd_loss_dense(spec, f.z.data(), f.t.data(), f.targets.data(), zero_w.data(),
                                 f.N, f.V, /*normalizer=*/0.0, grad.data());
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.positions, 0);
  for (float g : grad) ASSERT_EQ(g, 0.0f);
}

TEST(KdLoss, ZeroTailStaysFiniteForReverseDivergences) {
  const Fixture f;  // row 5 has tail mass 0
  const auto rows = f.sparse();
  for (const char* s : {"rkl", "srkl:0.1"}) {
    std::vector<float> grad(f.z.size(), 0.0f);
    const KdLossResult r = kd_loss_sparse(KdLossSpec::parse(s), f.z.data(), rows.data(), nullptr,
                                          f.w.data(), f.N, f.V, f.normalizer, grad.data());
    EXPECT_TRUE(std::isfinite(r.loss)) << s;
    for (float g : grad) ASSERT_TRUE(std::isfinite(g)) << s;
  }
}

TEST(KdLoss, SpecParsingAndErrors) {
  EXPECT_EQ(KdLossSpec::parse("kl=0.5,ce=0.5", 2.0f).describe(), "kl=0.5,ce=0.5 (T=2, tail=bucket)");
  EXPECT_EQ(KdLossSpec::parse("jsd:0.9").describe(), "jsd:0.9=1 (T=1, tail=bucket)");
  auto err = [](const std::string& s) {
    try {
      KdLossSpec::parse(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(err("kld"), "--loss 'kld': unknown loss 'kld' (known: ce, kl, rkl, jsd, tvd, skl, srkl)");
  EXPECT_EQ(err("kl=half"), "--loss 'kl=half': weight of 'kl' is not a number: 'half'");
  EXPECT_EQ(err("jsd:1"), "--loss 'jsd:1': the parameter of 'jsd' must be in (0, 1), found 1 "
                          "(use kl or rkl for the end points)");
  EXPECT_EQ(err("kl:0.3"), "--loss 'kl:0.3': 'kl' takes no parameter");
  EXPECT_EQ(err("kl,,ce"), "--loss 'kl,,ce': empty term");
}

}  // namespace
}  // namespace distill
