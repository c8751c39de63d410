// Reference LayerNorm: per-row mean and biased variance in double.
#include <cmath>
#include <vector>

#include "kernels/ref/ref.h"

namespace distill::ref {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps) {
  for (int n = 0; n < N; ++n) {
    const float* x = inp + long(n) * C;
    double m = 0.0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const double r = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < C; ++c)
      out[long(n) * C + c] = float((x[c] - m) * r * weight[c] + (bias ? bias[c] : 0.0));
    if (mean) mean[n] = float(m);
    if (rstd) rstd[n] = float(r);
  }
}

// xhat = (x - mean) rstd; dxhat = dout weight;
// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  std::vector<double> dw(C, 0.0), db(C, 0.0);
  for (int n = 0; n < N; ++n) {
    const float* x = inp + long(n) * C;
    const float* dy = dout + long(n) * C;
    const double m = mean[n], r = rstd[n];
    double mean_g = 0.0, mean_gx = 0.0;
    for (int c = 0; c < C; ++c) {
      const double xhat = (x[c] - m) * r;
      mean_g += double(dy[c]) * weight[c];
      mean_gx += double(dy[c]) * weight[c] * xhat;
      dw[c] += double(dy[c]) * xhat;
      db[c] += dy[c];
    }
    mean_g /= C;
    mean_gx /= C;
    if (dinp)
      for (int c = 0; c < C; ++c) {
        const double xhat = (x[c] - m) * r;
        const double g = double(dy[c]) * weight[c];
        dinp[long(n) * C + c] += float(r * (g - mean_g - xhat * mean_gx));
      }
  }
  for (int c = 0; c < C; ++c) {
    if (dweight) dweight[c] += float(dw[c]);
    if (dbias) dbias[c] += float(db[c]);
  }
}

}  // namespace distill::ref
