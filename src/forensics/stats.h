// The statistics the forensics verbs report: exact binomial and gamma tails (in log space, so
// p-values far below 1e-300 are still exact), the normal distribution, Holm-Bonferroni, and a
// Kolmogorov-Smirnov test of uniformity for calibration runs. Every function is checked against
// SciPy values in tests/fixtures/forensics_stats.json (tools/forensics_stats_reference.py).
#pragma once
#include <cstdint>
#include <vector>

namespace distill {

// ln P(X >= k) for X ~ Binomial(n, p). k <= 0 gives 0; k > n gives -inf.
double log_binomial_sf(int64_t k, int64_t n, double p);

// ln Q(a, x) = ln P(X >= x) for X ~ Gamma(shape a, scale 1) (the regularized upper incomplete
// gamma function). For a = n it is the tail of a sum of n Exp(1) variables.
double log_gamma_sf(double a, double x);

double normal_cdf(double z);
double normal_sf(double z);                  // 1 - Phi(z), accurate far into the tail
double log_normal_sf(double z);              // ln(1 - Phi(z)), also for z beyond 38
double normal_quantile(double p);            // Phi^-1(p), p in (0, 1)

// Holm-Bonferroni adjusted p-values (same order as the input): reject hypothesis i at family-wise
// level alpha when adjusted[i] <= alpha.
std::vector<double> holm_adjust(const std::vector<double>& p);

// One-sample Kolmogorov-Smirnov test of p-values against Uniform(0, 1).
struct KsResult {
  double d = 0.0;        // sup |F_n(x) - x|
  double p_value = 1.0;  // Kolmogorov's limit with Stephens' small-n correction
};
KsResult ks_uniform(std::vector<double> values);

// Natural log to log10, for printing "log10 p".
inline double to_log10(double ln_value) { return ln_value * 0.43429448190325182765; }

}  // namespace distill
