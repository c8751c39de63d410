#include "forensics/audit_tests.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace distill {

double sparse_distance(const SparseVec& a, const SparseVec& b) {
  if (a.ids.empty() || b.ids.empty()) return a.ids.empty() && b.ids.empty() ? 0.0 : 1.0;
  double dot = 0.0;
  size_t i = 0, j = 0;
  while (i < a.ids.size() && j < b.ids.size()) {
    if (a.ids[i] < b.ids[j]) {
      i++;
    } else if (a.ids[i] > b.ids[j]) {
      j++;
    } else {
      dot += double(a.w[i]) * double(b.w[j]);
      i++;
      j++;
    }
  }
  return std::sqrt(std::max(0.0, 2.0 - 2.0 * dot));
}

std::vector<double> prada_min_distances(const std::vector<const SparseVec*>& queries) {
  std::vector<double> d;
  for (size_t i = 1; i < queries.size(); i++) {
    double best = 1e300;
    for (size_t j = 0; j < i && best > 0.0; j++)
      best = std::min(best, sparse_distance(*queries[i], *queries[j]));
    d.push_back(best);
  }
  return d;
}

MmdResult mmd_permutation_test(const std::vector<double>& dist, int64_t nx, int permutations,
                               uint64_t seed) {
  const size_t n = size_t(std::llround(std::sqrt(double(dist.size()))));
  DISTILL_CHECK(n * n == dist.size() && nx > 0 && size_t(nx) < n);
  const int64_t ny = int64_t(n) - nx;
  // Median heuristic for the bandwidth.
  std::vector<double> off;
  off.reserve(n * (n - 1) / 2);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) off.push_back(dist[i * n + j]);
  std::nth_element(off.begin(), off.begin() + long(off.size() / 2), off.end());
  double sigma = off[off.size() / 2];
  if (!(sigma > 0.0)) sigma = 1.0;
  std::vector<double> k(n * n);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      k[i * n + j] = std::exp(-dist[i * n + j] * dist[i * n + j] / (2.0 * sigma * sigma));

  // MMD^2 (biased, V-statistic) = mean K_xx + mean K_yy - 2 mean K_xy. With the total sum fixed,
  // it depends on the split only through S_xx and S_yy: K_xy sum = (total - S_xx - S_yy) / 2.
  double total = 0.0;
  for (double v : k) total += v;
  std::vector<int> in_x(n);
  auto statistic = [&]() {
    double sxx = 0.0, syy = 0.0;
    for (size_t i = 0; i < n; i++) {
      const double* row = &k[i * n];
      double s = 0.0;
      if (in_x[i]) {
        for (size_t j = 0; j < n; j++) s += in_x[j] ? row[j] : 0.0;
        sxx += s;
      } else {
        for (size_t j = 0; j < n; j++) s += in_x[j] ? 0.0 : row[j];
        syy += s;
      }
    }
    const double sxy = (total - sxx - syy) / 2.0;
    return sxx / double(nx * nx) + syy / double(ny * ny) - 2.0 * sxy / double(nx * ny);
  };
  for (size_t i = 0; i < n; i++) in_x[i] = int64_t(i) < nx;
  MmdResult r;
  r.nx = nx;
  r.ny = ny;
  r.bandwidth = sigma;
  r.permutations = permutations;
  r.mmd2 = statistic();
  Rng rng(seed);
  int64_t at_least = 0;
  std::vector<size_t> idx(n);
  for (int p = 0; p < permutations; p++) {
    for (size_t i = 0; i < n; i++) idx[i] = i;
    // The first nx of a partial Fisher-Yates shuffle form the permuted first sample.
    for (size_t i = 0; i < size_t(nx); i++) std::swap(idx[i], idx[i + rng.below(n - i)]);
    std::fill(in_x.begin(), in_x.end(), 0);
    for (size_t i = 0; i < size_t(nx); i++) in_x[idx[i]] = 1;
    if (statistic() >= r.mmd2 - 1e-12 * std::fabs(r.mmd2)) at_least++;
  }
  r.p_value = double(1 + at_least) / double(1 + permutations);
  return r;
}

}  // namespace distill
