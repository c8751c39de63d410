// RMSNorm (HF LlamaRMSNorm), forward and backward.
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {

// inp, out (N,C); weight (C); rstd (N) cached. y = x * rstd * weight, rstd = 1/sqrt(mean(x^2)+eps).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, uint16_t* out16) {
  parallel_for_if(N, size_t(N) * C > kParallelMin, [&](int n) {
    const float* x = inp + long(n) * C;
    float* y = out + long(n) * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / float(C) + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    if (out16) bf16_round_row(out16 + long(n) * C, y, C);
    if (rstd) rstd[n] = r;
  });
}

// With g = dout * weight: d rstd / d x_j = -rstd^3 x_j / C, so
//   dinp += rstd * g - x * rstd^3 * mean(g * x)
//   dweight += sum over rows of dout * x * rstd.
// dweight is reduced deterministically: per-thread partials over static row blocks, then added in
// thread order (see layernorm.cpp).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C) {
  const int max_threads = omp_get_max_threads();
  std::vector<float> part(dweight ? size_t(max_threads) * C : 0);
#pragma omp parallel num_threads(max_threads)
  {
    const int nt = omp_get_num_threads();
    float* pw = part.empty() ? nullptr : part.data() + size_t(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* x = inp + long(n) * C;
      const float* dy = dout + long(n) * C;
      const float r = rstd[n];
      if (dinp) {
        float sgx = 0.0f;
#pragma omp simd reduction(+ : sgx)
        for (int c = 0; c < C; ++c) sgx += dy[c] * weight[c] * x[c];
        const float k = r * r * r * sgx / float(C);
        float* dx = dinp + long(n) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c) dx[c] += r * dy[c] * weight[c] - k * x[c];
      }
      if (pw) {
#pragma omp simd
        for (int c = 0; c < C; ++c) pw[c] += dy[c] * x[c] * r;
      }
    }
    if (pw) {
#pragma omp for schedule(static)
      for (int c = 0; c < C; ++c) {
        float s = 0.0f;
        for (int t = 0; t < nt; ++t) s += part[size_t(t) * C + c];
        dweight[c] += s;
      }
    }
  }
}

}  // namespace distill
