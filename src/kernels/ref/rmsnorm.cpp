// Reference RMSNorm (HF LlamaRMSNorm).
#include <cmath>
#include <vector>

#include "kernels/ref/ref.h"

namespace distill::ref {

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
  for (int n = 0; n < N; ++n) {
    const float* x = inp + long(n) * C;
    double ms = 0.0;
    for (int c = 0; c < C; ++c) ms += double(x[c]) * x[c];
    const double r = 1.0 / std::sqrt(ms / C + eps);
    for (int c = 0; c < C; ++c) out[long(n) * C + c] = float(x[c] * r * weight[c]);
    if (rstd) rstd[n] = float(r);
  }
}

// y_i = x_i r w_i, r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C:
// dx_j = r w_j dy_j - r^3 x_j / C * sum_i dy_i w_i x_i.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  std::vector<double> dw(C, 0.0);
  for (int n = 0; n < N; ++n) {
    const float* x = inp + long(n) * C;
    const float* dy = dout + long(n) * C;
    const double r = rstd[n];
    double s = 0.0;
    for (int c = 0; c < C; ++c) {
      s += double(dy[c]) * weight[c] * x[c];
      dw[c] += double(dy[c]) * x[c] * r;
    }
    if (dinp)
      for (int c = 0; c < C; ++c)
        dinp[long(n) * C + c] += float(r * weight[c] * dy[c] - r * r * r * x[c] * s / C);
  }
  if (dweight)
    for (int c = 0; c < C; ++c) dweight[c] += float(dw[c]);
}

}  // namespace distill::ref
