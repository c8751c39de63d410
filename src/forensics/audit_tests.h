// The two statistical tests of the harvest audit, on query vectors:
//  - PRADA (Juuti et al. 2019, "PRADA: Protecting against DNN Model Stealing Attacks"): for each
//    query of an account, in arrival order, its minimum distance to the account's earlier
//    queries; benign streams give a roughly normal set of distances, synthetic probing does not
//    (Shapiro-Wilk W below a threshold delta, src/forensics/normality.h).
//  - A two-sample MMD permutation test (Gretton et al. 2012, as used for query-stream detection
//    by Liu et al.): the account's last W queries against a reference sample, Gaussian kernel
//    with the median-distance bandwidth, p-value from label permutations.
#pragma once
#include <cstdint>
#include <vector>

namespace distill {

// A query as a sparse vector: ascending term ids and weights, L2-normalized (or empty).
struct SparseVec {
  std::vector<int32_t> ids;
  std::vector<double> w;
};

// Euclidean distance between two normalized sparse vectors: sqrt(2 - 2 cos), in [0, 2]
// (an empty vector is at distance 1 from everything but another empty one).
double sparse_distance(const SparseVec& a, const SparseVec& b);

// PRADA's distance set: for i = 1..n-1, min_{j<i} d(q_i, q_j). Size n - 1 (empty for n < 2).
std::vector<double> prada_min_distances(const std::vector<const SparseVec*>& queries);

struct MmdResult {
  double mmd2 = 0.0;     // biased MMD^2 estimate of the observed split
  double p_value = 1.0;  // (1 + #{permuted MMD^2 >= observed}) / (1 + permutations)
  int permutations = 0;
  int64_t nx = 0, ny = 0;
  double bandwidth = 0.0;  // Gaussian kernel sigma: the median pairwise distance
};

// Two-sample test on a symmetric (nx+ny) x (nx+ny) distance matrix `dist` (row-major), rows
// 0..nx-1 the first sample. k(a, b) = exp(-d^2 / (2 sigma^2)), sigma the median off-diagonal
// distance (1 when that is 0). Deterministic for a given seed.
MmdResult mmd_permutation_test(const std::vector<double>& dist, int64_t nx, int permutations,
                               uint64_t seed);

}  // namespace distill
