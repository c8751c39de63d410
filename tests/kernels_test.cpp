// Kernel tests: every kernel of kernels/kernels.h is checked
//  (a) against its naive oracle in kernels/ref over odd sizes, forward outputs and backward
//      gradients (backward into pre-filled random gradients, so += is checked, not =);
//  (b) against central finite differences of its own forward (L = sum(out * R), R random);
//  (c) on edge cases (masking, null pointers, GQA mapping, RoPE identities, determinism).
//
// Tolerance for (a): per element |got - want| <= rtol * (1 + |want|), rtol = 1e-5 * sqrt(K),
// K the total length of the sums behind the element (1 for element-wise ops). Rounding errors of a
// K-term fp32 sum with random signs grow like sqrt(K) * 6e-8, so this leaves ~100x headroom (the
// worst case seen is ~0.02 of the tolerance), and Tolerance.CatchesPerturbation shows a 1e-3
// change of one input is still caught. BF16 attention against the exact reference: rtol 2e-2.
// Tolerance for (b): |fd - analytic| <= 1e-2 |analytic| + 1e-3 (see fd_worst).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numbers>
#include <random>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "formats/dtype.h"
#include "kernels/attention_bf16.h"
#include "kernels/kernels.h"
#include "kernels/qmatmul.h"
#include "kernels/ref/ref_all.inc"

namespace distill {
namespace {

using Vec = std::vector<float>;
using Ids = std::vector<int32_t>;

Vec uniform(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Ids random_ids(size_t n, int V, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, V - 1);
  Ids v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

double rtol_for(double K) { return 1e-5 * std::sqrt(std::max(1.0, K)); }

// Largest |got - want| / (rtol (1 + |want|)) over the elements; NaN counts as infinitely wrong.
struct Worst {
  double ratio = 0.0;
  size_t index = 0;
  double got = 0.0, want = 0.0;
};
Worst worst_error(const Vec& got, const Vec& want, double rtol) {
  Worst w;
  for (size_t i = 0; i < want.size(); ++i) {
    double r = std::fabs(double(got[i]) - want[i]) / (rtol * (1.0 + std::fabs(want[i])));
    if (std::isnan(r)) r = INFINITY;
    if (r > w.ratio) w = {r, i, got[i], want[i]};
  }
  return w;
}

void expect_close(const char* what, const Vec& got, const Vec& want, double rtol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const Worst w = worst_error(got, want, rtol);
  EXPECT_LE(w.ratio, 1.0) << what << ": worst element " << w.index << " got " << w.got
                          << " want " << w.want << " |err| " << std::fabs(w.got - w.want)
                          << " = " << w.ratio << " x tolerance (rtol " << rtol << ")";
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Central differences of loss() at `samples` random coordinates of x, against `analytic`.
// Step 1e-2 on O(1) inputs; the step actually taken is (x+h) - (x-h) after fp32 rounding. The
// truncation error O(h^2 f''') is ~1e-5 here, and fp32 rounding of the changed outputs, summed in
// double, adds < 1e-4 after dividing by 2h, so |fd - analytic| <= 1e-2 |analytic| + 1e-3 has
// headroom yet fails for a gradient off by a few percent (FiniteDifferenceCatchesWrongGradient).
double fd_worst(Vec& x, const Vec& analytic, const std::function<double()>& loss,
                std::mt19937& rng, int samples = 8) {
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  double worst = 0.0;
  for (int s = 0; s < samples; ++s) {
    const size_t i = pick(rng);
    const float x0 = x[i];
    const float xp = x0 + 1e-2f, xm = x0 - 1e-2f;
    x[i] = xp;
    const double lp = loss();
    x[i] = xm;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (double(xp) - xm);
    const double r = std::fabs(fd - analytic[i]) / (1e-2 * std::fabs(analytic[i]) + 1e-3);
    worst = std::isnan(r) ? INFINITY : std::max(worst, r);
  }
  return worst;
}

void expect_fd(const char* what, Vec& x, const Vec& analytic,
               const std::function<double()>& loss, std::mt19937& rng) {
  EXPECT_LE(fd_worst(x, analytic, loss, rng), 1.0) << "finite differences vs backward: " << what;
}

bool bit_identical(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Each comparison below writes a kernel call once, as a lambda taking the function (the
// optimized one or ref::) and its output buffers, so both run on identical arguments. An empty Vec
// stands for a null pointer (an unwanted gradient or an absent bias).
float* ptr(Vec& v) { return v.empty() ? nullptr : v.data(); }
const float* ptr(const Vec& v) { return v.empty() ? nullptr : v.data(); }
Vec none;

// ---------------------------------------------------------------------------------------------
// Embedding

TEST(Embedding, MatchesReference) {
  std::mt19937 rng(101);
  for (int B : {1, 3})
    for (int T : {1, 5, 17})
      for (int C : {7, 24, 33})
        for (int V : {13, 61})
          for (bool pos : {false, true}) {
            SCOPED_TRACE(fmt::format("B={} T={} C={} V={} wpe={}", B, T, C, V, pos));
            const Ids ids = random_ids(size_t(B) * T, V, rng);
            const Vec wte = uniform(size_t(V) * C, rng);
            const Vec wpe = pos ? uniform(size_t(T + 2) * C, rng) : Vec{};
            Vec out(size_t(B) * T * C), rout(out.size());
            auto fwd = [&](auto fn, Vec& o) { fn(o.data(), ids.data(), wte.data(), ptr(wpe), B, T, C); };
            fwd(embedding_forward, out);
            fwd(ref::embedding_forward, rout);
            expect_close("out", out, rout, rtol_for(1));
            const Vec dout = uniform(out.size(), rng);
            Vec dwte = uniform(wte.size(), rng), dwpe = uniform(wpe.size(), rng);
            Vec rdwte = dwte, rdwpe = dwpe;
            auto bwd = [&](auto fn, Vec& gte, Vec& gpe) {
              fn(ptr(gte), ptr(gpe), dout.data(), ids.data(), B, T, C);
            };
            bwd(embedding_backward, dwte, dwpe);
            bwd(ref::embedding_backward, rdwte, rdwpe);
            expect_close("dwte", dwte, rdwte, rtol_for(B * T));
            expect_close("dwpe", dwpe, rdwpe, rtol_for(B));
          }
}

TEST(Embedding, FiniteDifferences) {
  std::mt19937 rng(102);
  const int B = 3, T = 5, C = 24, V = 13;
  const Ids ids = random_ids(size_t(B) * T, V, rng);
  Vec wte = uniform(size_t(V) * C, rng), wpe = uniform(size_t(T) * C, rng);
  const Vec R = uniform(size_t(B) * T * C, rng);
  Vec out(R.size());
  auto loss = [&] {
    embedding_forward(out.data(), ids.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  Vec gwte(wte.size(), 0.0f), gwpe(wpe.size(), 0.0f);
  embedding_backward(gwte.data(), gwpe.data(), R.data(), ids.data(), B, T, C);
  expect_fd("wte", wte, gwte, loss, rng);
  expect_fd("wpe", wpe, gwpe, loss, rng);
}

TEST(Embedding, RejectsNegativeId) {
  const Ids ids = {0, -1};
  const Vec wte(4 * 3, 1.0f);
  Vec out(2 * 3);
  EXPECT_THROW(embedding_forward(out.data(), ids.data(), wte.data(), nullptr, 1, 2, 3), Error);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm and RMSNorm

const std::pair<int, int> kNormSizes[] = {{1, 7}, {5, 24}, {51, 33}, {257, 100}};

TEST(LayerNorm, MatchesReference) {
  std::mt19937 rng(201);
  for (auto [N, C] : kNormSizes)
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(fmt::format("N={} C={} bias={}", N, C, with_bias));
      const Vec x = uniform(size_t(N) * C, rng, -2.0f, 3.0f), w = uniform(C, rng);
      const Vec b = with_bias ? uniform(C, rng) : Vec{};
      Vec out(x.size()), mean(N), rstd(N), rout = out, rmean = mean, rrstd = rstd;
      auto fwd = [&](auto fn, Vec& o, Vec& m, Vec& r) {
        fn(o.data(), m.data(), r.data(), x.data(), w.data(), ptr(b), N, C, 1e-5f);
      };
      fwd([](auto... a) { layernorm_forward(a...); }, out, mean, rstd);
      fwd(ref::layernorm_forward, rout, rmean, rrstd);
      // The optional bf16 copy of the output: the output rounded, the output unchanged.
      Vec out2(x.size());
      std::vector<uint16_t> out16(x.size()), want16(x.size());
      layernorm_forward(out2.data(), nullptr, nullptr, x.data(), w.data(), ptr(b), N, C, 1e-5f,
                        out16.data());
      round_to_bf16(want16.data(), out.data(), N, C, C);
      EXPECT_EQ(out2, out);
      EXPECT_EQ(out16, want16);
      expect_close("out", out, rout, rtol_for(2 * C));
      expect_close("mean", mean, rmean, rtol_for(C));
      expect_close("rstd", rstd, rrstd, rtol_for(2 * C));
      // Backward of both from the same (optimized) mean and rstd.
      const Vec dout = uniform(x.size(), rng);
      auto bwd = [&](auto fn, Vec& gx, Vec& gw, Vec& gb) {
        fn(ptr(gx), ptr(gw), ptr(gb), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
           N, C);
      };
      Vec dx = uniform(x.size(), rng), dw = uniform(C, rng), db = uniform(C, rng);
      Vec rdx = dx, rdw = dw, rdb = db;
      bwd(layernorm_backward, dx, dw, db);
      bwd(ref::layernorm_backward, rdx, rdw, rdb);
      expect_close("dinp", dx, rdx, rtol_for(2 * C));
      expect_close("dweight", dw, rdw, rtol_for(N));
      expect_close("dbias", db, rdb, rtol_for(N));
      // Null gradients are skipped and do not change the others.
      Vec dw2 = uniform(C, rng), rdw2 = dw2;
      bwd(layernorm_backward, none, dw2, none);
      bwd(ref::layernorm_backward, none, rdw2, none);
      expect_close("dweight only", dw2, rdw2, rtol_for(N));
    }
}

TEST(LayerNorm, FiniteDifferences) {
  std::mt19937 rng(202);
  const int N = 5, C = 33;
  Vec x = uniform(size_t(N) * C, rng), w = uniform(C, rng), b = uniform(C, rng);
  const Vec R = uniform(x.size(), rng);
  Vec out(x.size()), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                      1e-5f);
    return dot(out, R);
  };
  loss();
  Vec gx(x.size(), 0.0f), gw(C, 0.0f), gb(C, 0.0f);
  layernorm_backward(gx.data(), gw.data(), gb.data(), R.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C);
  expect_fd("inp", x, gx, loss, rng);
  expect_fd("weight", w, gw, loss, rng);
  expect_fd("bias", b, gb, loss, rng);
}

TEST(RMSNorm, MatchesReference) {
  std::mt19937 rng(203);
  for (auto [N, C] : kNormSizes) {
    SCOPED_TRACE(fmt::format("N={} C={}", N, C));
    const Vec x = uniform(size_t(N) * C, rng, -2.0f, 3.0f), w = uniform(C, rng);
    Vec out(x.size()), rstd(N), rout = out, rrstd = rstd;
    auto fwd = [&](auto fn, Vec& o, Vec& r) { fn(o.data(), r.data(), x.data(), w.data(), N, C, 1e-6f); };
    fwd([](auto... a) { rmsnorm_forward(a...); }, out, rstd);
    fwd(ref::rmsnorm_forward, rout, rrstd);
    Vec out2(x.size());
    std::vector<uint16_t> out16(x.size()), want16(x.size());
    rmsnorm_forward(out2.data(), nullptr, x.data(), w.data(), N, C, 1e-6f, out16.data());
    round_to_bf16(want16.data(), out.data(), N, C, C);
    EXPECT_EQ(out2, out);
    EXPECT_EQ(out16, want16);
    expect_close("out", out, rout, rtol_for(C));
    expect_close("rstd", rstd, rrstd, rtol_for(C));
    const Vec dout = uniform(x.size(), rng);
    auto bwd = [&](auto fn, Vec& gx, Vec& gw) {
      fn(ptr(gx), ptr(gw), dout.data(), x.data(), w.data(), rstd.data(), N, C);
    };
    Vec dx = uniform(x.size(), rng), dw = uniform(C, rng), rdx = dx, rdw = dw;
    bwd(rmsnorm_backward, dx, dw);
    bwd(ref::rmsnorm_backward, rdx, rdw);
    expect_close("dinp", dx, rdx, rtol_for(C));
    expect_close("dweight", dw, rdw, rtol_for(N));
    Vec dx2 = uniform(x.size(), rng), rdx2 = dx2;
    bwd(rmsnorm_backward, dx2, none);
    bwd(ref::rmsnorm_backward, rdx2, none);
    expect_close("dinp only", dx2, rdx2, rtol_for(C));
  }
}

TEST(RMSNorm, FiniteDifferences) {
  std::mt19937 rng(204);
  const int N = 5, C = 33;
  Vec x = uniform(size_t(N) * C, rng), w = uniform(C, rng);
  const Vec R = uniform(x.size(), rng);
  Vec out(x.size()), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
    return dot(out, R);
  };
  loss();
  Vec gx(x.size(), 0.0f), gw(C, 0.0f);
  rmsnorm_backward(gx.data(), gw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  expect_fd("inp", x, gx, loss, rng);
  expect_fd("weight", w, gw, loss, rng);
}

// The BF16 backwards (gelu_backward_bf16, swiglu_backward_bf16) against the naive fp32 reference:
// each gradient within one bf16 rounding (2^-8 relative) of the reference, and the column sums,
// made before rounding, as close as fp32 sums of N rows; with and without the sums.
TEST(Activations, Bf16BackwardsMatchReference) {
  std::mt19937 rng(312);
  for (auto [N, F] : {std::pair{1, 7}, {37, 33}, {130, 129}}) {
    SCOPED_TRACE(fmt::format("N={} F={}", N, F));
    for (int which = 0; which < 2; which++) {
      SCOPED_TRACE(which == 0 ? "gelu" : "swiglu");
      const int W = which == 0 ? F : 2 * F;  // gradient columns
      const Vec x = uniform(size_t(N) * W, rng, -4, 4);
      const Vec dout = uniform(size_t(N) * F, rng);
      const Vec dbias_start = uniform(W, rng);
      Vec ref_grad(size_t(N) * W, 0.0f);
      if (which == 0)
        ref::gelu_backward(ref_grad.data(), x.data(), dout.data(), ref_grad.size());
      else
        ref::swiglu_backward(ref_grad.data(), dout.data(), x.data(), N, F);
      Vec ref_bias = dbias_start;
      for (int n = 0; n < N; n++)
        for (int c = 0; c < W; c++) ref_bias[c] += ref_grad[size_t(n) * W + c];
      for (bool with_bias : {true, false}) {
        std::vector<uint16_t> g16(ref_grad.size(), 0xffff);
        Vec dbias = dbias_start;
        float* db = with_bias ? dbias.data() : nullptr;
        if (which == 0)
          gelu_backward_bf16(g16.data(), db, x.data(), dout.data(), N, F);
        else
          swiglu_backward_bf16(g16.data(), db, dout.data(), x.data(), N, F);
        Vec got(g16.size());
        for (size_t i = 0; i < g16.size(); i++) got[i] = bf16_to_f32(g16[i]);
        for (size_t i = 0; i < got.size(); i++)
          ASSERT_NEAR(got[i], ref_grad[i], std::fabs(ref_grad[i]) * 0x1p-8f + 1e-6f) << i;
        if (with_bias)
          expect_close("dbias", dbias, ref_bias, rtol_for(N));
        else
          EXPECT_EQ(dbias, dbias_start);
      }
    }
  }
}

// The activations' optional bf16 output is their fp32 output rounded, the fp32 output unchanged.
TEST(Activations, Bf16CopyOfTheOutput) {
  std::mt19937 rng(311);
  const int N = 37, F = 2100;  // a GELU over N*F crosses several of its 2048-element chunks
  const Vec x = uniform(size_t(N) * 2 * F, rng, -4, 4);
  for (int which = 0; which < 2; which++) {
    const size_t n = which == 0 ? x.size() : size_t(N) * F;
    Vec plain(n), with(n);
    std::vector<uint16_t> out16(n), want(n);
    if (which == 0) {
      gelu_forward(plain.data(), x.data(), n);
      gelu_forward(with.data(), x.data(), n, out16.data());
    } else {
      swiglu_forward(plain.data(), x.data(), N, F);
      swiglu_forward(with.data(), x.data(), N, F, out16.data());
    }
    EXPECT_EQ(plain, with);
    round_to_bf16(want.data(), plain.data(), 1, int(n), int(n));
    EXPECT_EQ(out16, want) << (which == 0 ? "gelu" : "swiglu");
  }
}

// The backward kernels' overwrite mode writes what accumulating into zeros gives, whatever dinp
// held before (gelu, swiglu, split/merge heads; matmul's overwrite_dinp is tested with Matmul).
TEST(Overwrite, EqualsAccumulatingIntoZeros) {
  std::mt19937 rng(309);
  const int B = 2, T = 5, NH = 4, NKV = 2, HD = 6, N = 7, F = 9;
  const size_t nq = size_t(B) * NH * T * HD, nkv = size_t(B) * NKV * T * HD;
  auto check = [&](const char* what, size_t n, const std::function<void(float*, bool)>& fn) {
    SCOPED_TRACE(what);
    Vec zero_start(n, 0.0f), garbage = uniform(n, rng), overwritten = garbage;
    fn(zero_start.data(), false);
    fn(overwritten.data(), true);
    EXPECT_EQ(overwritten, zero_start);
    fn(garbage.data(), false);
    EXPECT_NE(garbage, zero_start);
  };
  const Vec x = uniform(size_t(N) * 2 * F, rng), d = uniform(size_t(N) * 2 * F, rng);
  check("gelu", x.size(), [&](float* g, bool o) { gelu_backward(g, x.data(), d.data(), x.size(), o); });
  check("swiglu", x.size(), [&](float* g, bool o) { swiglu_backward(g, d.data(), x.data(), N, F, o); });
  const Vec q = uniform(nq, rng), k = uniform(nkv, rng), v = uniform(nkv, rng);
  check("split", nq + 2 * nkv, [&](float* g, bool o) {
    split_heads_backward(g, q.data(), k.data(), v.data(), B, T, NH, NKV, HD, o);
  });
  check("split, dk null", nq + 2 * nkv, [&](float* g, bool o) {
    split_heads_backward(g, q.data(), nullptr, v.data(), B, T, NH, NKV, HD, o);
  });
  check("merge", nq, [&](float* g, bool o) { merge_heads_backward(g, q.data(), B, T, NH, HD, o); });
}

// ---------------------------------------------------------------------------------------------
// Matmul and GEMM

TEST(Matmul, MatchesReference) {
  std::mt19937 rng(301);
  const struct { int N, IC, OC; } sizes[] = {
      {1, 7, 13}, {5, 33, 24}, {51, 24, 61}, {17, 64, 33}, {130, 96, 80}};
  for (auto [N, IC, OC] : sizes)
    for (bool with_bias : {true, false})
      for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
        SCOPED_TRACE(fmt::format("N={} IC={} OC={} bias={} bf16={}", N, IC, OC, with_bias,
                                 prec == MatmulPrecision::BF16));
        const Vec x = uniform(size_t(N) * IC, rng), w = uniform(size_t(OC) * IC, rng);
        const Vec b = with_bias ? uniform(OC, rng) : Vec{};
        Vec out(size_t(N) * OC), rout(out.size());
        auto fwd = [&](auto fn, Vec& o) { fn(o.data(), x.data(), w.data(), ptr(b), N, IC, OC, prec); };
        fwd([](auto... a) { matmul_forward(a...); }, out);
        fwd(ref::matmul_forward, rout);
        expect_close("out", out, rout, rtol_for(IC));
        const Vec dout = uniform(out.size(), rng);
        auto bwd = [&](auto fn, Vec& gx, Vec& gw, Vec& gb) {
          fn(ptr(gx), ptr(gw), ptr(gb), dout.data(), x.data(), w.data(), N, IC, OC, prec);
        };
        Vec dx = uniform(x.size(), rng), dw = uniform(w.size(), rng), db = uniform(OC, rng);
        Vec rdx = dx, rdw = dw, rdb = db;
        const auto ours_bwd = [](auto... a) { matmul_backward(a...); };
        bwd(ours_bwd, dx, dw, db);
        bwd(ref::matmul_backward, rdx, rdw, rdb);
        expect_close("dinp", dx, rdx, rtol_for(OC));
        expect_close("dweight", dw, rdw, rtol_for(N));
        expect_close("dbias", db, rdb, rtol_for(N));
        // Each gradient alone, the others null.
        Vec dx1 = dx, dw1 = dw, db1 = db;
        bwd(ours_bwd, dx1, none, none);
        bwd(ours_bwd, none, dw1, none);
        bwd(ours_bwd, none, none, db1);
        bwd(ref::matmul_backward, rdx, rdw, rdb);
        expect_close("dinp alone", dx1, rdx, rtol_for(OC));
        expect_close("dweight alone", dw1, rdw, rtol_for(N));
        expect_close("dbias alone", db1, rdb, rtol_for(N));
      }
}

// BF16 with the weights passed packed (a training model's per-step copies, Bf16Weight) gives the
// products of rounding them in the call, and overwrite_dinp replaces dinp instead of adding to
// it. On this project's hosts the packed products are bit-identical (oneDNN packs a plain B into
// the same layout and runs the same kernel); the tolerance allows an implementation elsewhere
// that sums in another order for one of the two.
TEST(Matmul, Bf16PackedWeightsAndOverwrite) {
  std::mt19937 rng(305);
  const MatmulPrecision bf16 = MatmulPrecision::BF16;
  for (auto [N, IC, OC] : {std::tuple{3, 19, 21}, {40, 33, 17}, {130, 64, 96}, {257, 384, 200}}) {
    SCOPED_TRACE(fmt::format("N={} IC={} OC={}", N, IC, OC));
    const Vec x = uniform(size_t(N) * IC, rng), w = uniform(size_t(OC) * IC, rng);
    const Vec b = uniform(OC, rng), dout = uniform(size_t(N) * OC, rng);
    // Each packed copy holds the rounded weights (and zero padding, if any) in some order.
    std::vector<uint16_t> rounded(w.size());
    round_to_bf16(rounded.data(), w.data(), OC, IC, IC);
    for (size_t i = 0; i < w.size(); i++) ASSERT_EQ(rounded[i], f32_to_bf16(w[i]));
    std::vector<uint16_t> fwd(bf16_packed_weight_size(OC, IC, false) + 32);
    std::vector<uint16_t> dinp(bf16_packed_weight_size(OC, IC, true) + 32);
    auto aligned = [](std::vector<uint16_t>& v) {
      return reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
    };
    const size_t nf = fwd.size() - 32, nd = dinp.size() - 32;
    pack_bf16_weight(aligned(fwd), w.data(), OC, IC, false);
    pack_bf16_weight(aligned(dinp), w.data(), OC, IC, true);
    for (auto [p, n] : {std::pair{aligned(fwd), nf}, {aligned(dinp), nd}}) {
      ASSERT_GE(n, w.size());
      std::vector<uint16_t> got(p, p + n), want = rounded;
      want.resize(n, 0);
      std::sort(got.begin(), got.end());
      std::sort(want.begin(), want.end());
      EXPECT_EQ(got, want);
    }
    const Bf16Weight w16{aligned(fwd), aligned(dinp)};
    Vec out(size_t(N) * OC), out16(out.size());
    matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC, bf16);
    matmul_forward(out16.data(), x.data(), w.data(), b.data(), N, IC, OC, bf16, w16);
    expect_close("out", out16, out, rtol_for(IC));
    // The input rounded by the forward (inp16) and the forward from a rounded input.
    std::vector<uint16_t> x16(x.size()), x16_ref(x.size());
    round_to_bf16(x16_ref.data(), x.data(), N, IC, IC);
    matmul_forward(out16.data(), x.data(), w.data(), b.data(), N, IC, OC, bf16, w16, x16.data());
    EXPECT_EQ(x16, x16_ref);
    expect_close("out, inp16", out16, out, rtol_for(IC));
    for (Bf16Weight wp : {Bf16Weight{}, w16}) {
      Vec from16(out.size());
      matmul_forward_bf16_input(from16.data(), x16.data(), w.data(), wp, b.data(), N, IC, OC);
      expect_close("out from inp16", from16, out, rtol_for(IC));
    }
    const Vec start = uniform(x.size(), rng);
    Vec dx = start, dw(w.size(), 0.0f), dx16 = start, dw16(w.size(), 0.0f);
    Vec dw_from16(w.size(), 0.0f);
    matmul_backward(dx.data(), dw.data(), nullptr, dout.data(), x.data(), w.data(), N, IC, OC,
                    bf16);
    matmul_backward(dx16.data(), dw16.data(), nullptr, dout.data(), x.data(), w.data(), N, IC,
                    OC, bf16, w16);
    expect_close("dinp", dx16, dx, rtol_for(OC));
    EXPECT_EQ(dw, dw16);  // the same dweight product either way
    // dweight from the forward's rounded input (inp16) equals dweight rounding inp itself.
    matmul_backward(nullptr, dw_from16.data(), nullptr, dout.data(), x.data(), w.data(), N, IC,
                    OC, bf16, w16, false, x16.data());
    EXPECT_EQ(dw, dw_from16);  // the same B, packed from bf16 or from f32
    for (MatmulPrecision prec : {MatmulPrecision::F32, bf16})
      for (Bf16Weight wp : {Bf16Weight{}, w16}) {
        Vec added = start, replaced = start, from_zero(x.size(), 0.0f);
        matmul_backward(added.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), N, IC,
                        OC, prec, wp);
        matmul_backward(replaced.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), N,
                        IC, OC, prec, wp, true);
        matmul_backward(from_zero.data(), nullptr, nullptr, dout.data(), x.data(), w.data(), N,
                        IC, OC, prec, wp);
        EXPECT_EQ(replaced, from_zero);
        EXPECT_NE(replaced, added);
      }
  }
}

TEST(Matmul, FiniteDifferences) {
  std::mt19937 rng(302);
  const int N = 5, IC = 33, OC = 24;
  Vec x = uniform(size_t(N) * IC, rng), w = uniform(size_t(OC) * IC, rng), b = uniform(OC, rng);
  const Vec R = uniform(size_t(N) * OC, rng);
  Vec out(R.size());
  auto loss = [&] {
    matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC);
    return dot(out, R);
  };
  Vec gx(x.size(), 0.0f), gw(w.size(), 0.0f), gb(OC, 0.0f);
  matmul_backward(gx.data(), gw.data(), gb.data(), R.data(), x.data(), w.data(), N, IC, OC);
  expect_fd("inp", x, gx, loss, rng);
  expect_fd("weight", w, gw, loss, rng);
  expect_fd("bias", b, gb, loss, rng);
}

// Small work runs inline: no OpenMP region at all, not even an inactive one (a region with a false
// `if` clause still built a team of one, 1.3-1.5 us each, 136 per gpt2-mini decode step). Big work
// with more than one thread runs on the team; every index exactly once either way.
TEST(ParallelForIf, SmallWorkOrOneThreadRunsInlineWithoutARegion) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2})
    for (bool big : {false, true}) {
      SCOPED_TRACE(fmt::format("threads={} big={}", threads, big));
      omp_set_num_threads(threads);
      std::vector<int> seen(1000, 0), level(1000, -1);
      parallel_for_if(1000, big, [&](int i) {
        seen[size_t(i)]++;
        level[size_t(i)] = omp_get_level();  // 1 inside any region, active or not
      });
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 1000);
      const int want = big && threads > 1 ? 1 : 0;
      EXPECT_EQ(std::count(level.begin(), level.end(), want), 1000);
    }
  // Inside a region (nested regions run on one thread): inline too.
  omp_set_num_threads(2);
  int nested_level = -1;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    parallel_for_if(10, true, [&](int) { nested_level = omp_get_level(); });
  }
  EXPECT_EQ(nested_level, 1);
  omp_set_num_threads(saved);
}

// team_parts_if: one call per thread of the team (each t once, all with the same nt) when the
// work is big and two threads are allowed; else a single part(1, 0) with no region.
TEST(TeamPartsIf, OnePartPerThreadOrOneInlinePart) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2})
    for (bool big : {false, true}) {
      SCOPED_TRACE(fmt::format("threads={} big={}", threads, big));
      omp_set_num_threads(threads);
      const int want_nt = big && threads > 1 ? 2 : 1;
      std::vector<int> calls(4, 0), nts(4, -1), levels(4, -1);
      team_parts_if(big, [&](int nt, int t) {
        ASSERT_GE(t, 0);
        ASSERT_LT(t, 4);
        calls[size_t(t)]++;
        nts[size_t(t)] = nt;
        levels[size_t(t)] = omp_get_level();
      });
      for (int t = 0; t < 4; ++t) {
        EXPECT_EQ(calls[size_t(t)], t < want_nt ? 1 : 0) << "t=" << t;
        if (t < want_nt) {
          EXPECT_EQ(nts[size_t(t)], want_nt);
          EXPECT_EQ(levels[size_t(t)], want_nt > 1 ? 1 : 0);
        }
      }
    }
  omp_set_num_threads(saved);
}

// The few-rows kernel behind matmul_forward for N <= kMatmulRowsMax (decode steps): odd sizes,
// vector tails (IC not a multiple of 16), every row count up to past one block of 8, and
// matrices large enough to be split across threads.
TEST(MatmulRows, MatchesReference) {
  std::mt19937 rng(305);
  const struct { int IC, OC; } shapes[] = {{1, 1}, {7, 5}, {16, 17}, {33, 40}, {100, 9},
                                           {300, 230}, {1024, 97}};
  for (auto [IC, OC] : shapes)
    for (int M : {1, 2, 3, 5, 8, 9, 13, 16})
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE(fmt::format("M={} IC={} OC={} bias={}", M, IC, OC, with_bias));
        const Vec x = uniform(size_t(M) * IC, rng), w = uniform(size_t(OC) * IC, rng);
        const Vec b = with_bias ? uniform(OC, rng) : Vec{};
        Vec out(size_t(M) * OC, NAN), rout(out.size());
        matmul_rows_forward(out.data(), x.data(), w.data(), ptr(b), M, IC, OC);
        ref::matmul_forward(rout.data(), x.data(), w.data(), ptr(b), M, IC, OC);
        expect_close("out", out, rout, rtol_for(IC));
      }
}

// A row's result does not depend on the other rows in the call or on the thread count: a
// sequence decoded alone gets the same logits, bit for bit, as inside a batch.
TEST(MatmulRows, RowsAreBitIdenticalAloneOrBatchedAndAcrossThreads) {
  // Row counts below, at and past a block of 8 (and tiled past it), with and without bias; at two
  // threads each thread's range of OC = 203 outputs starts mid-tile.
  std::mt19937 rng(306);
  const int IC = 385, OC = 203;  // > 64k weights: the threaded path
  for (int M : {2, 3, 4, 7, 8, 13, 16}) {
    for (bool with_bias : {true, false}) {
      const Vec x = uniform(size_t(M) * IC, rng), w = uniform(size_t(OC) * IC, rng),
                b = with_bias ? uniform(OC, rng) : Vec{};
      Vec batched(size_t(M) * OC);
      const int saved = omp_get_max_threads();
      omp_set_num_threads(2);
      matmul_rows_forward(batched.data(), x.data(), w.data(), ptr(b), M, IC, OC);
      omp_set_num_threads(1);
      for (int m = 0; m < M; m++) {
        Vec alone(OC);
        matmul_rows_forward(alone.data(), x.data() + size_t(m) * IC, w.data(), ptr(b), 1, IC, OC);
        EXPECT_TRUE(bit_identical(alone, Vec(batched.begin() + size_t(m) * OC,
                                             batched.begin() + size_t(m + 1) * OC)))
            << "M " << M << " bias " << with_bias << " row " << m;
      }
      omp_set_num_threads(saved);
    }
  }
}

// gemm with every transpose combination, padded leading dimensions (the padding columns of C
// must not be written: the reference leaves them), alpha != 1 and beta in {0, 1} (the values
// matmul.cpp's gemm accepts).
TEST(Gemm, MatchesReference) {
  std::mt19937 rng(303);
  const struct { int M, N, K; } sizes[] = {{1, 1, 1}, {7, 13, 5}, {33, 17, 61}, {64, 48, 96}};
  for (auto [M, N, K] : sizes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, 1.0f})
          for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
            SCOPED_TRACE(fmt::format("M={} N={} K={} ta={} tb={} beta={} bf16={}", M, N, K, ta,
                                     tb, beta, prec == MatmulPrecision::BF16));
            const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
            const Vec A = uniform(size_t(ta ? K : M) * lda, rng);
            const Vec Bm = uniform(size_t(tb ? N : K) * ldb, rng);
            Vec C = uniform(size_t(M) * ldc, rng), rC = C;
            auto run = [&](auto fn, Vec& c) {
              fn(ta, tb, M, N, K, 0.75f, A.data(), lda, Bm.data(), ldb, beta, c.data(), ldc, prec);
            };
            run(gemm, C);
            run(ref::gemm, rC);
            expect_close("C", C, rC, rtol_for(K));
          }
}

// Called from inside a parallel region (as attention does), each thread on its own C.
TEST(Gemm, InsideParallelRegion) {
  std::mt19937 rng(304);
  const int M = 17, N = 24, K = 33, threads = 4;
  const Vec A = uniform(size_t(M) * K, rng), Bm = uniform(size_t(K) * N, rng);
  std::vector<Vec> C(threads, Vec(size_t(M) * N, 0.0f));
  Vec want(size_t(M) * N);
  ref::gemm(false, false, M, N, K, 1.0f, A.data(), K, Bm.data(), N, 0.0f, want.data(), N);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t)
    gemm(false, false, M, N, K, 1.0f, A.data(), K, Bm.data(), N, 0.0f, C[t].data(), N);
  for (int t = 0; t < threads; ++t) expect_close("C", C[t], want, rtol_for(K));
}

// ---------------------------------------------------------------------------------------------
// Heads

const std::pair<int, int> kHeads[] = {{4, 4}, {4, 2}, {6, 1}};  // (NH, NKV)

TEST(Heads, MatchesReference) {
  std::mt19937 rng(401);
  for (int B : {1, 3})
    for (int T : {1, 5, 17})
      for (auto [NH, NKV] : kHeads)
        for (int HD : {8, 16}) {
          SCOPED_TRACE(fmt::format("B={} T={} NH={} NKV={} HD={}", B, T, NH, NKV, HD));
          const size_t nq = size_t(B) * NH * T * HD, nkv = size_t(B) * NKV * T * HD;
          const Vec qkv = uniform(nq + 2 * nkv, rng);
          Vec q(nq), k(nkv), v(nkv), rq(nq), rk(nkv), rv(nkv);
          auto split = [&](auto fn, Vec& a, Vec& b, Vec& c) {
            fn(a.data(), b.data(), c.data(), qkv.data(), B, T, NH, NKV, HD);
          };
          split(split_heads_forward, q, k, v);
          split(ref::split_heads_forward, rq, rk, rv);
          expect_close("q", q, rq, rtol_for(1));
          expect_close("k", k, rk, rtol_for(1));
          expect_close("v", v, rv, rtol_for(1));
          Vec dqkv = uniform(qkv.size(), rng), rdqkv = dqkv;
          auto split_bwd = [&](auto fn, Vec& g, const Vec& a, const Vec& b, const Vec& c) {
            fn(g.data(), ptr(a), ptr(b), ptr(c), B, T, NH, NKV, HD);
          };
          const auto ours_split_bwd = [](auto... a) { split_heads_backward(a...); };
          split_bwd(ours_split_bwd, dqkv, q, k, v);  // any (nq, nkv, nkv) data will do
          split_bwd(ref::split_heads_backward, rdqkv, q, k, v);
          expect_close("dqkv", dqkv, rdqkv, rtol_for(1));
          split_bwd(ours_split_bwd, dqkv, none, v, none);
          split_bwd(ref::split_heads_backward, rdqkv, none, v, none);
          expect_close("dqkv (dk only)", dqkv, rdqkv, rtol_for(1));
          Vec out(nq), rout(nq), dx = uniform(nq, rng), rdx = dx;
          merge_heads_forward(out.data(), q.data(), B, T, NH, HD);
          ref::merge_heads_forward(rout.data(), q.data(), B, T, NH, HD);
          expect_close("merged", out, rout, rtol_for(1));
          std::vector<uint16_t> out16(nq), want16(nq);
          Vec out2(nq);
          merge_heads_forward(out2.data(), q.data(), B, T, NH, HD, out16.data());
          round_to_bf16(want16.data(), out.data(), 1, int(nq), int(nq));
          EXPECT_EQ(out2, out);
          EXPECT_EQ(out16, want16);
          merge_heads_backward(dx.data(), out.data(), B, T, NH, HD);
          ref::merge_heads_backward(rdx.data(), out.data(), B, T, NH, HD);
          expect_close("dx", dx, rdx, rtol_for(1));
        }
}

TEST(Heads, FiniteDifferences) {
  std::mt19937 rng(402);
  const int B = 3, T = 5, NH = 4, NKV = 2, HD = 8;
  const size_t nq = size_t(B) * NH * T * HD, nkv = size_t(B) * NKV * T * HD;
  Vec qkv = uniform(nq + 2 * nkv, rng), x = uniform(nq, rng), q(nq), k(nkv), v(nkv), out(nq);
  const Vec Rq = uniform(nq, rng), Rk = uniform(nkv, rng), Rv = uniform(nkv, rng);
  auto split_loss = [&] {
    split_heads_forward(q.data(), k.data(), v.data(), qkv.data(), B, T, NH, NKV, HD);
    return dot(q, Rq) + dot(k, Rk) + dot(v, Rv);
  };
  auto merge_loss = [&] {
    merge_heads_forward(out.data(), x.data(), B, T, NH, HD);
    return dot(out, Rq);
  };
  Vec g(qkv.size(), 0.0f), gx(nq, 0.0f);
  split_heads_backward(g.data(), Rq.data(), Rk.data(), Rv.data(), B, T, NH, NKV, HD);
  merge_heads_backward(gx.data(), Rq.data(), B, T, NH, HD);
  expect_fd("qkv", qkv, g, split_loss, rng);
  expect_fd("x", x, gx, merge_loss, rng);
}

// ---------------------------------------------------------------------------------------------
// RoPE

TEST(Rope, InvFreqMatchesReference) {
  using Type = RopeScaling::Type;
  const RopeScaling none, linear{Type::Linear, 4.0f}, llama3{Type::Llama3, 8.0f, 1.0f, 4.0f, 8192},
      llama3_small{Type::Llama3, 32.0f, 1.0f, 4.0f, 64};
  for (const RopeScaling* s : {&none, &linear, &llama3, &llama3_small})
    for (int HD : {8, 16, 64, 128})
      for (float theta : {10000.0f, 500000.0f}) {
        SCOPED_TRACE(fmt::format("type={} HD={} theta={}", int(s->type), HD, theta));
        Vec f(HD / 2), rf(HD / 2);
        rope_inv_freq(f.data(), HD, theta, *s);
        ref::rope_inv_freq(rf.data(), HD, theta, *s);
        expect_close("inv_freq", f, rf, 1e-6);
      }
}

// Llama 3.1 8B: theta 500000, head_dim 128, factor 8, low/high_freq_factor 1/4, original 8192:
// low_freq_wavelen = 8192, high_freq_wavelen = 2048.
TEST(Rope, InvFreqLlama3HandComputed) {
  const RopeScaling s{RopeScaling::Type::Llama3, 8.0f, 1.0f, 4.0f, 8192};
  Vec f(64);
  rope_inv_freq(f.data(), 128, 500000.0f, s);
  // i = 0: inv_freq 1, wavelen 2 pi < 2048: high frequency, unchanged.
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  // i = 20: 500000^(-40/128) = 0.0165604..., wavelen 379.4 < 2048: unchanged.
  EXPECT_NEAR(f[20], 0.016560440080994446, 1e-6 * 0.01656);
  // i = 32: 500000^(-1/2) = 1.41421e-3, wavelen 4442.88 in [2048, 8192]: medium,
  // smooth = (8192/4442.88 - 1)/(4 - 1) = 0.281283, inv = (1 - smooth) inv/8 + smooth inv.
  const double base = 1.0 / std::sqrt(500000.0);
  const double smooth = (8192.0 / (2.0 * std::numbers::pi / base) - 1.0) / 3.0;
  EXPECT_NEAR(smooth, 0.281283, 1e-6);
  EXPECT_NEAR(f[32], (1.0 - smooth) * base / 8.0 + smooth * base, 1e-6 * 5.25e-4);
  EXPECT_NEAR(f[32], 5.248461609929547e-4, 1e-6 * 5.25e-4);
  // i = 40: 500000^(-80/128) = 2.74248e-4, wavelen 22910.6 > 8192: low, divided by 8.
  EXPECT_NEAR(f[40], 3.428102195952591e-05, 1e-6 * 3.43e-5);
  // i = 63: 500000^(-126/128) / 8.
  EXPECT_NEAR(f[63], 3.068925988914511e-07, 1e-6 * 3.07e-7);
  // Linear scaling divides every frequency by the factor.
  Vec lin(64), plain(64);
  rope_inv_freq(lin.data(), 128, 500000.0f, {RopeScaling::Type::Linear, 8.0f});
  rope_inv_freq(plain.data(), 128, 500000.0f, {});
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(lin[i], plain[i] / 8.0, 1e-6 * plain[i] / 8.0);
  EXPECT_THROW(rope_inv_freq(plain.data(), 7, 10000.0f, {}), Error);
}

TEST(Rope, MatchesReference) {
  std::mt19937 rng(501);
  for (int B : {1, 3})
    for (int H : {1, 4, 6})
      for (int T : {1, 5, 17})
        for (int HD : {8, 16})
          for (int pos0 : {0, 1000}) {
            SCOPED_TRACE(fmt::format("B={} H={} T={} HD={} pos0={}", B, H, T, HD, pos0));
            Vec f(HD / 2);
            rope_inv_freq(f.data(), HD, 10000.0f, {});
            Vec c(size_t(T) * HD / 2), s(c.size()), rc(c.size()), rs(c.size());
            rope_table(c.data(), s.data(), f.data(), T, HD, pos0);
            ref::rope_table(rc.data(), rs.data(), f.data(), T, HD, pos0);
            expect_close("cos", c, rc, rtol_for(1));
            expect_close("sin", s, rs, rtol_for(1));
            const Vec x0 = uniform(size_t(B) * H * T * HD, rng);
            Vec x = x0, rx = x0;
            rope_forward(x.data(), c.data(), s.data(), B, H, T, HD);
            ref::rope_forward(rx.data(), c.data(), s.data(), B, H, T, HD);
            expect_close("forward", x, rx, rtol_for(2));
            Vec d = x0, rd = x0;
            rope_backward(d.data(), c.data(), s.data(), B, H, T, HD);
            ref::rope_backward(rd.data(), c.data(), s.data(), B, H, T, HD);
            expect_close("backward", d, rd, rtol_for(2));
          }
}

TEST(Rope, Identities) {
  std::mt19937 rng(502);
  const int B = 2, H = 3, T = 9, HD = 16;
  Vec f(HD / 2), c(size_t(T) * HD / 2), s(c.size());
  rope_inv_freq(f.data(), HD, 10000.0f, {});
  rope_table(c.data(), s.data(), f.data(), T, HD, 0);
  const Vec x0 = uniform(size_t(B) * H * T * HD, rng);
  Vec x = x0;
  rope_forward(x.data(), c.data(), s.data(), B, H, T, HD);
  // Position 0 (t = 0 with pos0 = 0) is the identity, exactly.
  for (int bh = 0; bh < B * H; ++bh)
    for (int d = 0; d < HD; ++d)
      EXPECT_EQ(x[size_t(bh) * T * HD + d], x0[size_t(bh) * T * HD + d]) << bh << "," << d;
  // A rotation preserves each pair's norm, and the backward (transpose) undoes the forward.
  rope_backward(x.data(), c.data(), s.data(), B, H, T, HD);
  expect_close("backward(forward(x))", x, x0, 1e-6);
}

TEST(Rope, FiniteDifferences) {
  std::mt19937 rng(503);
  const int B = 2, H = 3, T = 5, HD = 8;
  Vec f(HD / 2), c(size_t(T) * HD / 2), s(c.size());
  rope_inv_freq(f.data(), HD, 10000.0f, {});
  rope_table(c.data(), s.data(), f.data(), T, HD, 7);
  Vec x = uniform(size_t(B) * H * T * HD, rng);
  const Vec R = uniform(x.size(), rng);
  Vec y(x.size());
  auto loss = [&] {
    y = x;
    rope_forward(y.data(), c.data(), s.data(), B, H, T, HD);
    return dot(y, R);
  };
  Vec g = R;  // rope_backward rotates in place: dx = R^T dout
  rope_backward(g.data(), c.data(), s.data(), B, H, T, HD);
  expect_fd("x", x, g, loss, rng);
}

// ---------------------------------------------------------------------------------------------
// Attention

struct AttentionData {
  int B, T, NH, NKV, HD;
  Vec q, k, v;
  size_t nq() const { return size_t(B) * NH * T * HD; }
  size_t natt() const { return size_t(B) * NH * T * T; }
};

// q, k in [-2, 2]: scores of O(1), so the softmax is far from uniform.
AttentionData make_attention(int B, int T, int NH, int NKV, int HD, std::mt19937& rng) {
  const size_t nq = size_t(B) * NH * T * HD, nkv = size_t(B) * NKV * T * HD;
  return {B, T, NH, NKV, HD, uniform(nq, rng, -2, 2), uniform(nkv, rng, -2, 2), uniform(nkv, rng)};
}

// BF16 mode is compared with the exact reference too: bf16 keeps 8 significant bits (relative
// rounding 2^-9 = 2e-3 per operand), so its stated tolerance is rtol 2e-2.
TEST(Attention, MatchesReference) {
  std::mt19937 rng(601);
  for (int B : {1, 3})
    for (int T : {1, 5, 17})
      for (auto [NH, NKV] : kHeads)
        for (int HD : {8, 16})
          for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
            const bool bf16 = prec == MatmulPrecision::BF16;
            SCOPED_TRACE(fmt::format("B={} T={} NH={} NKV={} HD={} bf16={}", B, T, NH, NKV, HD,
                                     bf16));
            const AttentionData a = make_attention(B, T, NH, NKV, HD, rng);
            Vec out(a.nq()), att(a.natt()), rout(a.nq()), ratt(a.natt());
            auto fwd = [&](auto fn, Vec& o, Vec& p) {
              fn(o.data(), p.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV, HD, prec);
            };
            fwd(attention_forward, out, att);
            fwd(ref::attention_forward, rout, ratt);
            // att: HD-term dot products, then a T-term softmax sum; out adds a T-term sum.
            expect_close("att", att, ratt, bf16 ? 2e-2 : rtol_for(HD + T));
            expect_close("out", out, rout, bf16 ? 2e-2 : rtol_for(HD + 2 * T));
            // Backward of both from the reference att; datt is scratch and not compared.
            const Vec dout = uniform(a.nq(), rng);
            auto bwd = [&](auto fn, Vec& gq, Vec& gk, Vec& gv) {
              Vec datt(a.natt());
              fn(ptr(gq), ptr(gk), ptr(gv), datt.data(), dout.data(), ratt.data(), a.q.data(),
                 a.k.data(), a.v.data(), B, T, NH, NKV, HD, prec);
            };
            Vec dq = uniform(a.nq(), rng), dk = uniform(a.k.size(), rng);
            Vec dv = uniform(a.v.size(), rng), rdq = dq, rdk = dk, rdv = dv;
            bwd(attention_backward, dq, dk, dv);
            bwd(ref::attention_backward, rdq, rdk, rdv);
            // dq: HD (dP) + T (row dot) + T (dS K); dk, dv also sum over the group's heads.
            const int group = NH / NKV;
            expect_close("dq", dq, rdq, bf16 ? 2e-2 : rtol_for(HD + 2 * T));
            expect_close("dk", dk, rdk, bf16 ? 2e-2 : rtol_for(HD + 2 * T * group));
            expect_close("dv", dv, rdv, bf16 ? 2e-2 : rtol_for(T * group));
            if (bf16) continue;
            // Null gradients: dk alone.
            Vec dk1 = dk;
            bwd(attention_backward, none, dk1, none);
            bwd(ref::attention_backward, none, rdk, none);
            expect_close("dk alone", dk1, rdk, rtol_for(HD + 2 * T * group));
          }
}

// The AVX512-BF16 kernels (attention_bf16.cpp) at sizes that exercise their padding (odd HD and
// T), several 4-row tiles and 64-column strips, and GQA; against the exact reference at the
// stated bf16 tolerance and against the oneDNN bf16 path (kernel ISA forced to AVX2), which
// rounds the same operands to bf16 and differs only in fp32 summation order (and the rare
// probability that then rounds to the other bf16 neighbour): rtol 4e-3.
TEST(Attention, Bf16KernelOddSizesAndFallback) {
  if (!attention_bf16_available())
    std::printf("note: no AVX512-BF16 here; both sides below run the oneDNN path\n");
  std::mt19937 rng(607);
  const MatmulPrecision bf16 = MatmulPrecision::BF16;
  for (auto [B, T, NH, NKV, HD] : {std::tuple{1, 67, 4, 2, 7}, {2, 130, 3, 1, 72},
                                   {1, 6, 2, 2, 64}, {1, 1, 1, 1, 33}, {1, 33, 2, 1, 16}}) {
    SCOPED_TRACE(fmt::format("B={} T={} NH={} NKV={} HD={}", B, T, NH, NKV, HD));
    const AttentionData a = make_attention(B, T, NH, NKV, HD, rng);
    const Vec dout = uniform(a.nq(), rng);
    struct Result {
      Vec out, att, dq, dk, dv;
    };
    auto run = [&](KernelIsa isa, auto fwd, auto bwd, bool grads = true) {
      set_kernel_isa(isa);
      Result r{Vec(a.nq()), Vec(a.natt()), Vec(a.nq(), 0.5f), Vec(a.k.size(), 0.25f),
               Vec(a.v.size(), -0.5f)};
      fwd(r.out.data(), r.att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV, HD, bf16);
      Vec datt(a.natt());
      if (grads)
        bwd(r.dq.data(), r.dk.data(), r.dv.data(), datt.data(), dout.data(), r.att.data(),
            a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV, HD, bf16);
      set_kernel_isa(KernelIsa::Auto);
      return r;
    };
    const Result kernel = run(KernelIsa::Auto, attention_forward, attention_backward);
    const Result onednn = run(KernelIsa::Avx2, attention_forward, attention_backward);
    const Result exact = run(KernelIsa::Auto, ref::attention_forward, ref::attention_backward);
    for (auto [name, got, other, want] :
         {std::tuple{"att", &kernel.att, &onednn.att, &exact.att},
          {"out", &kernel.out, &onednn.out, &exact.out}, {"dq", &kernel.dq, &onednn.dq, &exact.dq},
          {"dk", &kernel.dk, &onednn.dk, &exact.dk}, {"dv", &kernel.dv, &onednn.dv, &exact.dv}}) {
      SCOPED_TRACE(name);
      expect_close("vs exact", *got, *want, 2e-2);
      expect_close("vs oneDNN bf16", *got, *other, 4e-3);
    }
    // Each gradient alone, the others null: the same values as all three together.
    set_kernel_isa(KernelIsa::Auto);
    for (int only = 0; only < 3; only++) {
      Vec g[3] = {Vec(a.nq(), 0.5f), Vec(a.k.size(), 0.25f), Vec(a.v.size(), -0.5f)};
      Vec datt(a.natt());
      attention_backward(only == 0 ? g[0].data() : nullptr, only == 1 ? g[1].data() : nullptr,
                         only == 2 ? g[2].data() : nullptr, datt.data(), dout.data(),
                         kernel.att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV,
                         HD, bf16);
      const Vec* want[3] = {&kernel.dq, &kernel.dk, &kernel.dv};
      EXPECT_EQ(g[only], *want[only]) << "gradient " << only << " alone";
    }
  }
}

TEST(Attention, FiniteDifferences) {
  std::mt19937 rng(603);
  for (auto [NH, NKV] : kHeads) {
    SCOPED_TRACE(fmt::format("NH={} NKV={}", NH, NKV));
    const int B = 2, T = 7, HD = 8;
    AttentionData a = make_attention(B, T, NH, NKV, HD, rng);
    const Vec R = uniform(a.nq(), rng);
    Vec out(a.nq()), att(a.natt()), datt(a.natt());
    auto loss = [&] {
      attention_forward(out.data(), att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV,
                        HD);
      return dot(out, R);
    };
    loss();
    Vec gq(a.q.size(), 0.0f), gk(a.k.size(), 0.0f), gv(a.v.size(), 0.0f);
    attention_backward(gq.data(), gk.data(), gv.data(), datt.data(), R.data(), att.data(),
                       a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV, HD);
    expect_fd("q", a.q, gq, loss, rng);
    expect_fd("k", a.k, gk, loss, rng);
    expect_fd("v", a.v, gv, loss, rng);
  }
}

// Query head h must read kv head h / (NH/NKV): give kv head j the constant value j + 1 in v, so
// every output of head h equals h / (NH/NKV) + 1 whatever the attention weights. Also: att rows
// are probability vectors with zeros above the diagonal.
TEST(Attention, GqaMappingAndCausalMask) {
  std::mt19937 rng(604);
  const int B = 2, T = 6, HD = 8;
  for (auto [NH, NKV] : {std::pair{6, 2}, std::pair{6, 3}, std::pair{4, 1}, std::pair{4, 4}}) {
    SCOPED_TRACE(fmt::format("NH={} NKV={}", NH, NKV));
    AttentionData a = make_attention(B, T, NH, NKV, HD, rng);
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < NKV; ++j)
        std::fill_n(a.v.begin() + (size_t(b) * NKV + j) * T * HD, T * HD, float(j + 1));
    Vec out(a.nq()), att(a.natt());
    attention_forward(out.data(), att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV,
                      HD);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h)
        for (int i = 0; i < T * HD; ++i)
          ASSERT_NEAR(out[(size_t(b) * NH + h) * T * HD + i], float(h / (NH / NKV) + 1), 1e-5)
              << "b=" << b << " h=" << h;
    for (size_t row = 0; row < size_t(B) * NH * T; ++row) {
      const int t = int(row % T);
      double sum = 0.0;
      for (int s = 0; s < T; ++s) {
        const float p = att[row * T + s];
        if (s > t) {
          ASSERT_EQ(p, 0.0f) << "above the diagonal, row " << row;
        }
        sum += p;
      }
      ASSERT_NEAR(sum, 1.0, 1e-5) << "row " << row;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activations and residual

void expect_gelu_matches(const Vec& x, const Vec& dout, Vec dx) {
  Vec y(x.size()), ry(x.size()), rdx = dx;
  gelu_forward(y.data(), x.data(), x.size());
  ref::gelu_forward(ry.data(), x.data(), x.size());
  expect_close("gelu", y, ry, rtol_for(1));
  // In place (the decode path's call) gives the same bits as out of place.
  Vec inplace = x;
  gelu_forward(inplace.data(), inplace.data(), inplace.size());
  EXPECT_EQ(inplace, y) << "gelu in place";
  gelu_backward(dx.data(), x.data(), dout.data(), x.size());
  ref::gelu_backward(rdx.data(), x.data(), dout.data(), x.size());
  expect_close("gelu backward", dx, rdx, rtol_for(1));
}

void expect_swiglu_matches(const Vec& gate_up, const Vec& dout, Vec dgu, int N, int F) {
  Vec y(dout.size()), ry(dout.size()), rdgu = dgu;
  swiglu_forward(y.data(), gate_up.data(), N, F);
  ref::swiglu_forward(ry.data(), gate_up.data(), N, F);
  expect_close("swiglu", y, ry, rtol_for(1));
  swiglu_backward(dgu.data(), dout.data(), gate_up.data(), N, F);
  ref::swiglu_backward(rdgu.data(), dout.data(), gate_up.data(), N, F);
  expect_close("swiglu backward", dgu, rdgu, rtol_for(1));
}

TEST(Activations, MatchesReference) {
  std::mt19937 rng(701);
  for (size_t n : {size_t(1), size_t(7), size_t(1000), size_t(100003)}) {
    SCOPED_TRACE(fmt::format("gelu n={}", n));
    expect_gelu_matches(uniform(n, rng, -8.0f, 8.0f), uniform(n, rng), uniform(n, rng));
  }
  for (int N : {1, 5, 51})
    for (int F : {7, 33, 129}) {
      SCOPED_TRACE(fmt::format("swiglu N={} F={}", N, F));
      const size_t n = size_t(N) * F;
      expect_swiglu_matches(uniform(2 * n, rng, -8, 8), uniform(n, rng), uniform(2 * n, rng), N, F);
    }
  // Far tails: the clamped exp must neither overflow nor give NaN (gelu(-1e4) = 0, ...).
  SCOPED_TRACE("extreme inputs");
  const Vec x = {-1e4f, -100, -20, -9.6f, -5, -1e-3f, 0, 1e-3f, 5, 20, 100, 1e4f};
  const Vec ones(x.size(), 1.0f), zeros(2 * x.size(), 0.0f);
  expect_gelu_matches(x, ones, Vec(x.size(), 0.0f));
  Vec gate_up = x;  // gate = x, up = 1
  gate_up.insert(gate_up.end(), x.size(), 1.0f);
  expect_swiglu_matches(gate_up, ones, zeros, 1, int(x.size()));
}

TEST(Activations, FiniteDifferences) {
  std::mt19937 rng(702);
  const size_t n = 301;
  Vec x = uniform(n, rng, -4.0f, 4.0f), y(n);
  const Vec R = uniform(n, rng);
  auto gelu_loss = [&] {
    gelu_forward(y.data(), x.data(), n);
    return dot(y, R);
  };
  Vec gx(n, 0.0f);
  gelu_backward(gx.data(), x.data(), R.data(), n);
  expect_fd("gelu", x, gx, gelu_loss, rng);
  const int N = 5, F = 33;
  Vec gu = uniform(size_t(N) * 2 * F, rng, -4.0f, 4.0f), out(size_t(N) * F);
  const Vec Rs = uniform(out.size(), rng);
  auto swiglu_loss = [&] {
    swiglu_forward(out.data(), gu.data(), N, F);
    return dot(out, Rs);
  };
  Vec ggu(gu.size(), 0.0f);
  swiglu_backward(ggu.data(), Rs.data(), gu.data(), N, F);
  expect_fd("swiglu", gu, ggu, swiglu_loss, rng);
}

TEST(Residual, MatchesReferenceAndGradients) {
  std::mt19937 rng(703);
  for (size_t n : {size_t(1), size_t(33), size_t(100003)}) {
    SCOPED_TRACE(fmt::format("n={}", n));
    Vec a = uniform(n, rng), b = uniform(n, rng), y(n), ry(n);
    residual_forward(y.data(), a.data(), b.data(), n);
    ref::residual_forward(ry.data(), a.data(), b.data(), n);
    expect_close("out", y, ry, rtol_for(1));
    const Vec dout = uniform(n, rng);
    Vec da = uniform(n, rng), db = uniform(n, rng), rda = da, rdb = db;
    residual_backward(da.data(), db.data(), dout.data(), n);
    ref::residual_backward(rda.data(), rdb.data(), dout.data(), n);
    expect_close("da", da, rda, rtol_for(1));
    expect_close("db", db, rdb, rtol_for(1));
    residual_backward(nullptr, db.data(), dout.data(), n);
    ref::residual_backward(nullptr, rdb.data(), dout.data(), n);
    expect_close("db only", db, rdb, rtol_for(1));
    // In place: out aliases a.
    Vec ai = a;
    residual_forward(ai.data(), ai.data(), b.data(), n);
    expect_close("in place", ai, ry, rtol_for(1));
    auto loss = [&] {
      residual_forward(y.data(), a.data(), b.data(), n);
      return dot(y, dout);
    };
    expect_fd("a", a, dout, loss, rng);
    expect_fd("b", b, dout, loss, rng);
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

// Targets uniform in [0, V) with about a quarter masked (-100, HF's ignore_index).
Ids ce_targets(int N, int V, std::mt19937& rng) {
  Ids t = random_ids(N, V, rng);
  std::bernoulli_distribution masked(0.25);
  for (int32_t& x : t)
    if (masked(rng)) x = -100;
  return t;
}

TEST(CrossEntropy, MatchesReference) {
  std::mt19937 rng(801);
  for (int N : {1, 5, 51})
    for (int V : {13, 61, 1001}) {
      SCOPED_TRACE(fmt::format("N={} V={}", N, V));
      const Vec logits = uniform(size_t(N) * V, rng, -6.0f, 6.0f);
      const Ids tg = ce_targets(N, V, rng);
      const Vec dl = uniform(N, rng);
      Vec loss(N), lse(N), rloss(N), rlse(N);
      crossentropy_forward(loss.data(), lse.data(), logits.data(), tg.data(), N, V);
      ref::crossentropy_forward(rloss.data(), rlse.data(), logits.data(), tg.data(), N, V);
      expect_close("losses", loss, rloss, rtol_for(V));
      expect_close("lse", lse, rlse, rtol_for(V));
      // Backward from the same (optimized) lse: the gradient itself is element-wise.
      Vec d = uniform(logits.size(), rng), rd = d;
      crossentropy_backward(d.data(), logits.data(), lse.data(), tg.data(), dl.data(), N, V);
      ref::crossentropy_backward(rd.data(), logits.data(), lse.data(), tg.data(), dl.data(), N, V);
      expect_close("dlogits", d, rd, rtol_for(1));
      Vec fused = logits, rfused = logits, floss(N), rfloss(N);
      crossentropy_fused(fused.data(), floss.data(), tg.data(), dl.data(), N, V);
      ref::crossentropy_fused(rfused.data(), rfloss.data(), tg.data(), dl.data(), N, V);
      expect_close("fused losses", floss, rfloss, rtol_for(V));
      expect_close("fused dlogits", fused, rfused, rtol_for(V));
    }
}

TEST(CrossEntropy, FiniteDifferences) {
  std::mt19937 rng(802);
  const int N = 7, V = 61;
  Vec logits = uniform(size_t(N) * V, rng, -3.0f, 3.0f);
  Ids tg = random_ids(N, V, rng);
  tg[2] = -100;
  const Vec dl = uniform(N, rng);
  Vec loss(N), lse(N);
  auto f = [&] {
    crossentropy_forward(loss.data(), lse.data(), logits.data(), tg.data(), N, V);
    return dot(loss, dl);
  };
  f();
  Vec g(logits.size(), 0.0f);
  crossentropy_backward(g.data(), logits.data(), lse.data(), tg.data(), dl.data(), N, V);
  expect_fd("logits", logits, g, f, rng);
  Vec fused = logits, floss(N);
  crossentropy_fused(fused.data(), floss.data(), tg.data(), dl.data(), N, V);
  expect_fd("logits (fused)", logits, fused, f, rng);
}

TEST(CrossEntropy, AllMaskedGivesZeroLossAndGradient) {
  std::mt19937 rng(803);
  const int N = 9, V = 61;
  const Vec logits = uniform(size_t(N) * V, rng, -6.0f, 6.0f), dl = uniform(N, rng);
  const Ids tg(N, -100);
  Vec loss(N, 1.0f), lse(N);
  crossentropy_forward(loss.data(), lse.data(), logits.data(), tg.data(), N, V);
  for (float l : loss) EXPECT_EQ(l, 0.0f);
  const Vec d0 = uniform(logits.size(), rng);
  Vec d = d0;
  crossentropy_backward(d.data(), logits.data(), lse.data(), tg.data(), dl.data(), N, V);
  EXPECT_TRUE(bit_identical(d, d0)) << "masked rows must receive no gradient";
  Vec fused = logits, floss(N, 1.0f);
  crossentropy_fused(fused.data(), floss.data(), tg.data(), dl.data(), N, V);
  for (float l : floss) EXPECT_EQ(l, 0.0f);
  for (float g : fused) ASSERT_EQ(g, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Determinism and the power of the comparisons

// Every kernel with a cross-row reduction, on sizes that split across threads, run twice.
TEST(Determinism, BitIdenticalReruns) {
  std::mt19937 rng(901);
  const int N = 301, C = 96, V = 517, B = 3, T = 33, NH = 6, NKV = 2, HD = 16;
  auto twice = [](const char* what, const std::function<Vec()>& run) {
    EXPECT_TRUE(bit_identical(run(), run())) << what;
  };
  const Vec x = uniform(size_t(N) * C, rng), w = uniform(C, rng), b = uniform(C, rng),
            dout = uniform(x.size(), rng);
  Vec mean(N), rstd(N), y(x.size());
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  twice("layernorm_backward", [&] {
    Vec g(x.size() + 2 * C, 0.0f);
    layernorm_backward(g.data(), g.data() + x.size(), g.data() + x.size() + C, dout.data(),
                       x.data(), w.data(), mean.data(), rstd.data(), N, C);
    return g;
  });
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  twice("rmsnorm_backward", [&] {
    Vec g(x.size() + C, 0.0f);
    rmsnorm_backward(g.data(), g.data() + x.size(), dout.data(), x.data(), w.data(), rstd.data(),
                     N, C);
    return g;
  });
  const Ids ids = random_ids(N, 37, rng);
  twice("embedding_backward", [&] {
    Vec g(size_t(37 + N) * C, 0.0f);
    embedding_backward(g.data(), g.data() + size_t(37) * C, dout.data(), ids.data(), 1, N, C);
    return g;
  });
  const Vec wm = uniform(size_t(80) * C, rng), dm = uniform(size_t(N) * 80, rng);
  twice("matmul_backward", [&] {
    Vec g(x.size() + wm.size() + 80, 0.0f);
    matmul_backward(g.data(), g.data() + x.size(), g.data() + x.size() + wm.size(), dm.data(),
                    x.data(), wm.data(), N, C, 80);
    return g;
  });
  const AttentionData a = make_attention(B, T, NH, NKV, HD, rng);
  Vec out(a.nq()), att(a.natt()), datt(a.natt());
  twice("attention_forward", [&] {
    attention_forward(out.data(), att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV,
                      HD);
    return out;
  });
  const Vec da = uniform(a.nq(), rng);
  twice("attention_backward", [&] {
    Vec g(a.nq() + 2 * a.k.size(), 0.0f);
    attention_backward(g.data(), g.data() + a.nq(), g.data() + a.nq() + a.k.size(), datt.data(),
                       da.data(), att.data(), a.q.data(), a.k.data(), a.v.data(), B, T, NH, NKV,
                       HD);
    return g;
  });
  const Vec logits = uniform(size_t(N) * V, rng, -6.0f, 6.0f), dl = uniform(N, rng);
  const Ids tg = ce_targets(N, V, rng);
  twice("crossentropy_fused", [&] {
    Vec l = logits, loss(N);
    crossentropy_fused(l.data(), loss.data(), tg.data(), dl.data(), N, V);
    l.insert(l.end(), loss.begin(), loss.end());
    return l;
  });
}

// A 1e-3 change of one input must fail the reference comparison (the tolerance is not so loose
// that it hides real errors), for an element-wise-like output and for a reduced gradient.
TEST(Tolerance, CatchesPerturbation) {
  std::mt19937 rng(902);
  const int N = 51, C = 33;
  const Vec x = uniform(size_t(N) * C, rng), w = uniform(C, rng, 0.5f, 1.5f), b = uniform(C, rng);
  Vec xp = x;
  xp[17 * C + 5] += 1e-3f;
  Vec out(x.size()), mean(N), rstd(N), rout(x.size()), rmean(N), rrstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), xp.data(), w.data(), b.data(), N, C,
                    1e-5f);
  ref::layernorm_forward(rout.data(), rmean.data(), rrstd.data(), x.data(), w.data(), b.data(), N,
                         C, 1e-5f);
  EXPECT_GT(worst_error(out, rout, rtol_for(2 * C)).ratio, 1.0) << "layernorm out";
  const Vec dout = uniform(x.size(), rng);
  Vec doutp = dout;
  doutp[3 * C + 9] += 1e-3f;
  Vec dw(C, 0.0f), rdw(C, 0.0f);
  layernorm_backward(nullptr, dw.data(), nullptr, doutp.data(), x.data(), w.data(), rmean.data(),
                     rrstd.data(), N, C);
  ref::layernorm_backward(nullptr, rdw.data(), nullptr, dout.data(), x.data(), w.data(),
                          rmean.data(), rrstd.data(), N, C);
  EXPECT_GT(worst_error(dw, rdw, rtol_for(N)).ratio, 1.0) << "layernorm dweight";
}

// A gradient off by 5% must fail the finite-difference check.
TEST(Tolerance, FiniteDifferenceCatchesWrongGradient) {
  std::mt19937 rng(903);
  const int N = 5, C = 33;
  Vec x = uniform(size_t(N) * C, rng), w = uniform(C, rng);
  const Vec R = uniform(x.size(), rng);
  Vec out(x.size()), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
    return dot(out, R);
  };
  loss();
  Vec gw(C, 0.0f);
  rmsnorm_backward(nullptr, gw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  for (float& g : gw) g *= 1.05f;
  EXPECT_GT(fd_worst(w, gw, loss, rng), 1.0);
}

}  // namespace
}  // namespace distill
