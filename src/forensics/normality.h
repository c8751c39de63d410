// Shapiro-Wilk test of normality, implemented from Royston (1995), "Remark AS R94: A remark on
// algorithm AS 181: the W-test for normality", Applied Statistics 44(4): the coefficients a_i
// from normal scores with polynomial corrections for the two extreme ones, and Royston's
// normalizing transformations of W (exact for n = 3). Valid for 3 <= n <= 5000.
// Used by the harvest audit (PRADA, Juuti et al. 2019) on an account's minimum query distances.
#pragma once
#include <cstdint>
#include <vector>

namespace distill {

struct ShapiroWilk {
  double w = 1.0;        // the statistic, in (0, 1]; small W: far from normal
  double p_value = 1.0;  // P(W' <= W) under normality
  int64_t n = 0;         // sample size
};

// Throws distill::Error when n < 3, n > 5000, or all values are equal (W undefined).
ShapiroWilk shapiro_wilk(std::vector<double> x);

// Royston's p-value of a given W for sample size n (3 <= n <= 5000): what shapiro_wilk reports.
double shapiro_wilk_p_value(double w, int64_t n);

}  // namespace distill
