// Low-precision weights (kernels/qmatmul.h): the conversions, q8_0 storage, and qmatmul_forward
// for every weight type and every instruction set the build has, against a naive reference over
// odd sizes (vector tails, partial q8_0 blocks, row counts around the blocks of 8 and the
// decode/prompt switch at 16).
//
// The reference is the exact result, in double, of the arithmetic the kernel is meant to do: the
// dequantized weights times x as the kernel sees it (rounded to bf16 where the BF16 unit or
// oneDNN's bf16 GEMM runs, quantized to q8_0 per 32-block for q8_0 weights; q8_0 prompt rows
// widen the weights to bf16 and round x to bf16). So the only error
// left is fp32 summation: |err| <= 1e-5 * sqrt(K) * (1 + |want|), as in kernels_test.
// Tolerance.CatchesWrongScale shows this still catches one block's scale off by 1%. How far the
// low-precision result is from the f32 model is a separate question, measured on whole models
// (lowp_infer_test).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "formats/dtype.h"
#include "kernels/qmatmul.h"


namespace distill {
namespace {

using Vec = std::vector<float>;

Vec uniform(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Every instruction set this build and CPU can run, best first.
std::vector<KernelIsa> isas() {
  std::vector<KernelIsa> out;
  for (KernelIsa isa : {KernelIsa::Avx512, KernelIsa::Avx2, KernelIsa::Scalar}) {
    set_kernel_isa(isa);
    if (kernel_isa() == isa) out.push_back(isa);
  }
  set_kernel_isa(KernelIsa::Auto);
  return out;
}

struct IsaGuard {
  explicit IsaGuard(KernelIsa isa) { set_kernel_isa(isa); }
  ~IsaGuard() { set_kernel_isa(KernelIsa::Auto); }
};

// The exact result of the kernel's arithmetic on row m, output o, in double: x as the kernel sees it
// (rounded to bf16 by the BF16 unit and oneDNN, quantized to q8_0 per 32-block for q8_0
// weights) times the dequantized weights; and the bound of fp32 summation error around it.
// Q8AsBf16: q8_0 prompt processing (more than 16 rows with the BF16 unit) widens the weights to
// bf16 and rounds x to bf16.
enum class XMode { Exact, Bf16, Q8, Q8AsBf16 };

struct Expected {
  Vec want, bound;
};

Vec x_as_seen(const Vec& x, int M, int IC, XMode mode) {
  Vec out(x);
  for (int m = 0; m < M; m++)
    for (int b = 0; b * 32 < IC; b++) {
      float* xm = out.data() + size_t(m) * IC;
      const int c1 = std::min(IC, b * 32 + 32);
      if (mode == XMode::Bf16 || mode == XMode::Q8AsBf16) {
        for (int k = b * 32; k < c1; k++) xm[k] = bf16_to_f32(f32_to_bf16(xm[k]));
      } else if (mode == XMode::Q8) {
        float amax = 0.0f;
        for (int k = b * 32; k < c1; k++) amax = std::max(amax, std::fabs(xm[k]));
        const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        for (int k = b * 32; k < c1; k++)
          xm[k] = std::clamp(std::nearbyint(xm[k] * inv), -127.0f, 127.0f) * d;
      }
    }
  return out;
}

Expected reference(const QMatrix& w, const Vec& x_in, const Vec& bias, int M, XMode mode) {
  const int IC = w.cols(), OC = w.rows();
  const Vec x = x_as_seen(x_in, M, IC, mode);
  Expected e{Vec(size_t(M) * OC), Vec(size_t(M) * OC)};
  Vec row(IC);
  for (int o = 0; o < OC; o++) {
    w.dequantize_row(o, row.data());
    if (mode == XMode::Q8AsBf16)
      for (float& v : row) v = bf16_to_f32(f32_to_bf16(v));
    for (int m = 0; m < M; m++) {
      const float* xm = x.data() + size_t(m) * IC;
      double dot = 0.0;
      for (int k = 0; k < IC; k++) dot += double(xm[k]) * row[k];
      const double want = dot + (bias.empty() ? 0.0 : bias[o]);
      e.want[size_t(m) * OC + o] = float(want);
      e.bound[size_t(m) * OC + o] = float(1e-5 * std::sqrt(double(IC)) * (1.0 + std::fabs(want)));
    }
  }
  return e;
}

XMode mode_for(WeightType type, KernelIsa isa, int M) {
  const bool bf16_unit = isa == KernelIsa::Avx512 && cpu_has("avx512_bf16");
  if (type == WeightType::Q8_0) return bf16_unit && M > 16 ? XMode::Q8AsBf16 : XMode::Q8;
  if (type == WeightType::BF16 && bf16_unit) return XMode::Bf16;  // the dot unit or oneDNN (M > 16)
  return XMode::Exact;
}

void expect_within(const Vec& got, const Expected& e, const std::string& what) {
  size_t bad = 0, worst_i = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); i++) {
    const double err = std::fabs(double(got[i]) - e.want[i]);
    const double ratio = std::isnan(got[i]) ? INFINITY : err / e.bound[i];
    if (ratio > 1.0) bad++;
    if (ratio > worst) worst = ratio, worst_i = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": worst element " << worst_i << " got " << got[worst_i]
                     << " want " << e.want[worst_i] << " (" << worst << " x the bound "
                     << e.bound[worst_i] << ")";
}

TEST(QMatrix, Q8StorageIsWithinHalfAStepAndRoundTrips) {
  std::mt19937 rng(2);
  const int rows = 5, cols = 70;  // 3 blocks, the last one partial (6 columns)
  Vec w = uniform(size_t(rows) * cols, rng);
  for (int c = 0; c < 32; c++) w[size_t(2) * cols + c] = 0.0f;  // an all-zero block
  const QMatrix q(w.data(), rows, cols, WeightType::Q8_0);
  EXPECT_EQ(q.ld(), 96);
  EXPECT_EQ(q.bytes(), size_t(rows) * 96 + size_t(rows) * 3 * 4);
  Vec row(cols);
  for (int r = 0; r < rows; r++) {
    q.dequantize_row(r, row.data());
    for (int c = 0; c < cols; c++) {
      const float d = q.scales()[size_t(r) * 3 + c / 32];
      // Half a step, plus the scale's rounding to f16 (relative 2^-11) over 127 steps.
      ASSERT_LE(std::fabs(row[c] - w[size_t(r) * cols + c]), d * (0.5f + 127 * 0x1p-11f) + 1e-7f)
          << r << "," << c;
    }
    for (int c = cols; c < 96; c++) EXPECT_EQ(q.qs()[size_t(r) * 96 + c], 0);
  }
  EXPECT_EQ(q.scales()[2 * 3 + 0], 0.0f);
  // Quantizing the dequantized matrix again gives the same bytes (a q8_0 GGUF tensor loaded as
  // f32 and quantized on load keeps its exact values).
  Vec back(size_t(rows) * cols);
  for (int r = 0; r < rows; r++) q.dequantize_row(r, back.data() + size_t(r) * cols);
  const QMatrix again(back.data(), rows, cols, WeightType::Q8_0);
  EXPECT_EQ(std::memcmp(again.qs(), q.qs(), size_t(rows) * 96), 0);
  EXPECT_EQ(std::memcmp(again.scales(), q.scales(), size_t(rows) * 3 * 4), 0);
}

TEST(QMatmul, MatchesReferenceForEveryTypeAndInstructionSet) {
  std::mt19937 rng(3);
  const struct { int IC, OC; } shapes[] = {{1, 1}, {7, 5}, {16, 17}, {33, 40}, {64, 3},
                                           {100, 9}, {300, 230}, {1024, 97}};
  for (KernelIsa isa : isas()) {
    IsaGuard guard(isa);
    for (WeightType type : {WeightType::BF16, WeightType::F16, WeightType::Q8_0})
      for (auto [IC, OC] : shapes) {
        const Vec w = uniform(size_t(OC) * IC, rng);
        const QMatrix q(w.data(), OC, IC, type);
        for (int M : {1, 2, 3, 8, 9, 13, 16, 17, 40})
          for (bool with_bias : {true, false}) {
            const std::string what = fmt::format("{} {} M={} IC={} OC={} bias={}",
                                                 kernel_isa_name(isa), weight_type_name(type),
                                                 M, IC, OC, with_bias);
            SCOPED_TRACE(what);
            const Vec x = uniform(size_t(M) * IC, rng);
            const Vec b = with_bias ? uniform(OC, rng) : Vec{};
            Vec out(size_t(M) * OC, NAN);
            qmatmul_forward(out.data(), x.data(), q, with_bias ? b.data() : nullptr, M);
            expect_within(out, reference(q, x, b, M, mode_for(type, isa, M)), what);
          }
      }
  }
}

// Each fallback gives the best instruction set's answer within the tolerance of the type.
TEST(QMatmul, FallbacksAgreeWithTheBestInstructionSet) {
  std::mt19937 rng(4);
  const int M = 11, IC = 200, OC = 70;
  const Vec x = uniform(size_t(M) * IC, rng), w = uniform(size_t(OC) * IC, rng);
  const auto all = isas();
  ASSERT_GE(all.size(), 1u);
  for (WeightType type : {WeightType::BF16, WeightType::F16, WeightType::Q8_0}) {
    const QMatrix q(w.data(), OC, IC, type);
    Vec best(size_t(M) * OC);
    {
      IsaGuard guard(all[0]);
      qmatmul_forward(best.data(), x.data(), q, nullptr, M);
    }
    for (size_t i = 1; i < all.size(); i++) {
      IsaGuard guard(all[i]);
      Vec got(best.size());
      qmatmul_forward(got.data(), x.data(), q, nullptr, M);
      // q8_0: the same integer dots, only the float summation order differs; f16: widened exactly
      // on every path; bf16: the BF16 unit rounds x, the fallbacks do not.
      const double tol = type == WeightType::BF16 ? 2e-2 : 1e-4;
      for (size_t j = 0; j < got.size(); j++)
        ASSERT_NEAR(got[j], best[j], tol * (1.0 + std::fabs(best[j])))
            << weight_type_name(type) << " " << kernel_isa_name(all[i]) << " vs "
            << kernel_isa_name(all[0]) << " at " << j;
    }
  }
}

// As for f32 (MatmulRows): a row's result does not depend on the other rows of the call (up to
// 16: the decode kernels) or on the thread count.
TEST(QMatmul, RowsAreBitIdenticalAloneOrBatchedAndAcrossThreads) {
  std::mt19937 rng(5);
  const int M = 13, IC = 385, OC = 203;  // > 64k weights: the threaded path
  const Vec x = uniform(size_t(M) * IC, rng), w = uniform(size_t(OC) * IC, rng),
            b = uniform(OC, rng);
  const int saved = omp_get_max_threads();
  for (WeightType type : {WeightType::BF16, WeightType::F16, WeightType::Q8_0}) {
    const QMatrix q(w.data(), OC, IC, type);
    Vec batched(size_t(M) * OC);
    omp_set_num_threads(2);
    qmatmul_forward(batched.data(), x.data(), q, b.data(), M);
    omp_set_num_threads(1);
    for (int m = 0; m < M; m++) {
      Vec alone(OC);
      qmatmul_forward(alone.data(), x.data() + size_t(m) * IC, q, b.data(), 1);
      EXPECT_EQ(std::memcmp(alone.data(), batched.data() + size_t(m) * OC, sizeof(float) * OC), 0)
          << weight_type_name(type) << " row " << m;
    }
  }
  omp_set_num_threads(saved);
}

// The bounds are tight enough to catch a kernel that gets one 32-block's scale 1% wrong.
TEST(Tolerance, CatchesWrongScale) {
  std::mt19937 rng(6);
  const int M = 4, IC = 256, OC = 8;
  const Vec x = uniform(size_t(M) * IC, rng), w = uniform(size_t(OC) * IC, rng);
  for (WeightType type : {WeightType::BF16, WeightType::F16, WeightType::Q8_0}) {
    const QMatrix q(w.data(), OC, IC, type);
    const XMode mode = mode_for(type, kernel_isa(), M);
    const Expected e = reference(q, x, {}, M, mode);
    const Vec xs = x_as_seen(x, M, IC, mode);
    Vec row(IC);
    q.dequantize_row(0, row.data());
    double block = 0.0;
    for (int k = 0; k < 32; k++) block += double(xs[k]) * row[k];
    ASSERT_GT(std::fabs(block), 0.3);
    Vec out(size_t(M) * OC);
    qmatmul_forward(out.data(), x.data(), q, nullptr, M);
    EXPECT_LE(std::fabs(out[0] - e.want[0]), e.bound[0]);
    EXPECT_GT(std::fabs(out[0] + 0.01 * block - e.want[0]), e.bound[0]) << weight_type_name(type);
  }
}

TEST(WeightType, ParsesNamesAndRejectsOthers) {
  EXPECT_EQ(parse_weight_type("q8_0"), WeightType::Q8_0);
  EXPECT_EQ(parse_weight_type("bf16"), WeightType::BF16);
  try {
    parse_weight_type("q4_k");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q4_k"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("q8_0"), std::string::npos);
  }
}

}  // namespace
}  // namespace distill
