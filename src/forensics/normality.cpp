#include "forensics/normality.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "forensics/stats.h"

namespace distill {

namespace {

// c[0] + c[1] x + c[2] x^2 + ...
double poly(const double* c, int n, double x) {
  double r = 0.0;
  for (int i = n - 1; i >= 0; i--) r = r * x + c[i];
  return r;
}

}  // namespace

ShapiroWilk shapiro_wilk(std::vector<double> x) {
  const int64_t n = int64_t(x.size());
  if (n < 3) throw Error("shapiro_wilk: needs at least 3 values, got {}", n);
  if (n > 5000) throw Error("shapiro_wilk: at most 5000 values (Royston 1995), got {}", n);
  std::sort(x.begin(), x.end());
  if (x.back() - x.front() < 1e-300 * std::max(1.0, std::fabs(x.front())))
    throw Error("shapiro_wilk: all {} values are equal", n);

  // Coefficients a_i (antisymmetric: a_{n+1-i} = -a_i); we keep the upper half a[n-1-i].
  const int64_t half = n / 2;
  std::vector<double> a(size_t(half), 0.0);
  if (n == 3) {
    a[0] = std::sqrt(0.5);
  } else {
    // Normal scores m_i = Phi^-1((i - 3/8) / (n + 1/4)) for the upper half (i = n, n-1, ...).
    std::vector<double> m(static_cast<size_t>(half));
    double mm = 0.0;
    for (int64_t i = 0; i < half; i++) {
      m[size_t(i)] = normal_quantile((double(n - i) - 0.375) / (double(n) + 0.25));
      mm += 2.0 * m[size_t(i)] * m[size_t(i)];
    }
    const double u = 1.0 / std::sqrt(double(n));
    // Royston's polynomial corrections of the largest (and, n > 5, second largest) coefficient.
    static const double c1[6] = {0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056};
    static const double c2[6] = {0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633};
    const double rsm = std::sqrt(mm);
    a[0] = m[0] / rsm + poly(c1, 6, u);
    int64_t first = 1;
    double phi;
    if (n > 5) {
      a[1] = m[1] / rsm + poly(c2, 6, u);
      first = 2;
      phi = (mm - 2.0 * m[0] * m[0] - 2.0 * m[1] * m[1]) /
            (1.0 - 2.0 * a[0] * a[0] - 2.0 * a[1] * a[1]);
    } else {
      phi = (mm - 2.0 * m[0] * m[0]) / (1.0 - 2.0 * a[0] * a[0]);
    }
    const double rphi = std::sqrt(phi);
    for (int64_t i = first; i < half; i++) a[size_t(i)] = m[size_t(i)] / rphi;
  }

  // W = (sum a_i x_(i))^2 / sum (x_i - mean)^2, with x shifted by its median for accuracy.
  const double shift = x[size_t(n / 2)];
  double mean = 0.0;
  for (double v : x) mean += v - shift;
  mean /= double(n);
  double ss = 0.0;
  for (double v : x) ss += (v - shift - mean) * (v - shift - mean);
  double num = 0.0;
  for (int64_t i = 0; i < half; i++) num += a[size_t(i)] * (x[size_t(n - 1 - i)] - x[size_t(i)]);
  ShapiroWilk r;
  r.n = n;
  r.w = std::min(1.0, num * num / ss);
  r.p_value = shapiro_wilk_p_value(r.w, n);
  return r;
}

double shapiro_wilk_p_value(double w, int64_t n) {
  if (n < 3 || n > 5000) throw Error("shapiro_wilk: n must be in [3, 5000], got {}", n);
  if (n == 3) {
    // Exact: P(W <= w) = (6/pi) (asin(sqrt(w)) - asin(sqrt(3/4))).
    const double pi = 3.14159265358979323846;
    return std::clamp(6.0 / pi * (std::asin(std::sqrt(w)) - std::asin(std::sqrt(0.75))), 0.0, 1.0);
  }
  const double y = std::log1p(-w);  // ln(1 - W)
  double z;
  if (n <= 11) {
    // Small samples: -ln(gamma - ln(1 - W)) is close to normal with polynomial mean and sd in n.
    const double nn = double(n);
    const double gamma = -2.273 + 0.459 * nn;
    if (y >= gamma) return 0.0;  // beyond the transformation's range: W is far too small
    static const double cm[4] = {0.5440, -0.39978, 0.025054, -6.714e-4};
    static const double cs[4] = {1.3822, -0.77857, 0.062767, -0.0020322};
    const double mu = poly(cm, 4, nn);
    const double sigma = std::exp(poly(cs, 4, nn));
    z = (-std::log(gamma - y) - mu) / sigma;
  } else {
    // n >= 12: ln(1 - W) is close to normal with mean and ln sd polynomial in ln n.
    const double ln_n = std::log(double(n));
    static const double cm[4] = {-1.5861, -0.31082, -0.083751, 0.0038915};
    static const double cs[3] = {-0.4803, -0.082676, 0.0030302};
    const double mu = poly(cm, 4, ln_n);
    const double sigma = std::exp(poly(cs, 3, ln_n));
    z = (y - mu) / sigma;
  }
  return normal_sf(z);
}

}  // namespace distill
