#include "forensics/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace distill {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double log_binomial_pmf(int64_t i, int64_t n, double p) {
  return std::lgamma(double(n) + 1) - std::lgamma(double(i) + 1) - std::lgamma(double(n - i) + 1) +
         double(i) * std::log(p) + double(n - i) * std::log1p(-p);
}

}  // namespace

double log_binomial_sf(int64_t k, int64_t n, double p) {
  if (k <= 0) return 0.0;
  if (k > n) return -kInf;
  if (p <= 0.0) return -kInf;
  if (p >= 1.0) return 0.0;
  const int64_t mode = int64_t(std::floor(double(n + 1) * p));
  const double odds = p / (1.0 - p);
  if (k - 1 >= mode) {
    // Past the mode the terms fall: sum upward from k, relative to the first term.
    double sum = 1.0, term = 1.0;
    for (int64_t i = k; i < n; i++) {
      term *= double(n - i) / double(i + 1) * odds;
      sum += term;
      if (term < sum * 1e-17) break;
    }
    return log_binomial_pmf(k, n, p) + std::log(sum);
  }
  // Below the mode the upper tail is not small: 1 - P(X <= k-1), summing downward from k-1.
  double sum = 1.0, term = 1.0;
  for (int64_t i = k - 1; i > 0; i--) {
    term *= double(i) / double(n - i + 1) / odds;
    sum += term;
    if (term < sum * 1e-17) break;
  }
  const double lower = std::exp(log_binomial_pmf(k - 1, n, p)) * sum;
  return std::log1p(-std::min(lower, 1.0));
}

double log_gamma_sf(double a, double x) {
  if (x <= 0.0) return 0.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1.0) {
    // Series for the lower function P(a, x); Q = 1 - P is not small here.
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 100000; n++) {
      term *= x / (a + n);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    const double lower = std::exp(log_prefix) * sum;
    return std::log1p(-std::min(lower, 1.0));
  }
  // Continued fraction for Q(a, x), evaluated by the modified Lentz method.
  const double tiny = 1e-300;
  double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 100000; i++) {
    const double an = -double(i) * (double(i) - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < 1e-16) break;
  }
  return log_prefix + std::log(h);
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z * 0.70710678118654752440); }
double normal_sf(double z) { return 0.5 * std::erfc(z * 0.70710678118654752440); }

double log_normal_sf(double z) {
  if (z < 30.0) return std::log(normal_sf(z));
  // Mills-ratio expansion: 1 - Phi(z) = phi(z)/z * (1 - 1/z^2 + 3/z^4 - 15/z^6 ...).
  const double z2 = z * z;
  return -0.5 * z2 - std::log(z) - 0.91893853320467274178 +
         std::log1p(-1.0 / z2 + 3.0 / (z2 * z2) - 15.0 / (z2 * z2 * z2));
}

double normal_quantile(double p) {
  if (p <= 0.0) return -kInf;
  if (p >= 1.0) return kInf;
  const double q = std::min(p, 1.0 - p);
  // Abramowitz & Stegun 26.2.23 as the start, then Newton steps on the tail probability.
  const double t = std::sqrt(-2.0 * std::log(q));
  double x = t - (2.515517 + t * (0.802853 + t * 0.010328)) /
                     (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)));
  for (int it = 0; it < 4; it++) {
    const double pdf = std::exp(-0.5 * x * x) * 0.39894228040143267794;
    if (pdf <= 0.0) break;
    x += (normal_sf(x) - q) / pdf;
  }
  return p < 0.5 ? -x : x;
}

std::vector<double> holm_adjust(const std::vector<double>& p) {
  const size_t m = p.size();
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] < p[b]; });
  std::vector<double> adjusted(m);
  double running = 0.0;
  for (size_t j = 0; j < m; j++) {
    running = std::max(running, std::min(1.0, double(m - j) * p[order[j]]));
    adjusted[order[j]] = running;
  }
  return adjusted;
}

KsResult ks_uniform(std::vector<double> values) {
  KsResult r;
  const size_t n = values.size();
  if (n == 0) return r;
  std::sort(values.begin(), values.end());
  for (size_t i = 0; i < n; i++) {
    const double x = std::clamp(values[i], 0.0, 1.0);
    r.d = std::max({r.d, double(i + 1) / double(n) - x, x - double(i) / double(n)});
  }
  const double sn = std::sqrt(double(n));
  const double lambda = (sn + 0.12 + 0.11 / sn) * r.d;
  if (lambda < 0.2) return r;  // the series below is 1 to double precision
  double sum = 0.0, sign = 1.0;
  for (int j = 1; j <= 200; j++) {
    const double term = std::exp(-2.0 * double(j) * double(j) * lambda * lambda);
    sum += sign * term;
    if (term < 1e-18) break;
    sign = -sign;
  }
  r.p_value = std::clamp(2.0 * sum, 0.0, 1.0);
  return r;
}

}  // namespace distill
