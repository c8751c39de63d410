// LayerNorm over the last dimension (GPT-2), forward and backward.
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {

// inp, out (N,C); weight, bias (C) (bias may be null: no bias); mean, rstd (N) cached.
// Biased variance as torch.nn.LayerNorm. Two passes over a row that sits in L1: the mean first,
// then the centred sum of squares, which avoids the cancellation of E[x^2] - E[x]^2.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps, uint16_t* out16) {
  parallel_for_if(N, size_t(N) * C > kParallelMin, [&](int n) {
    const float* x = inp + long(n) * C;
    float* y = out + long(n) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum / float(C);
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += (x[c] - m) * (x[c] - m);
    const float r = 1.0f / std::sqrt(ss / float(C) + eps);
    if (bias) {
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * r * weight[c] + bias[c];
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * r * weight[c];
    }
    if (out16) bf16_round_row(out16 + long(n) * C, y, C);
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  });
}

// With xhat = (x - mean) * rstd and g = dout * weight:
//   dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))
//   dweight += sum over rows of dout * xhat, dbias += sum over rows of dout.
// The row sums are deterministic: each thread accumulates its static block of rows into its own
// partial (C) buffers, then the partials are added in thread order, parallel over channels.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  const int max_threads = omp_get_max_threads();
  // Partials [thread][dweight C | dbias C], zero-initialised (threads that do not run add 0).
  std::vector<float> part((dweight || dbias) ? size_t(max_threads) * 2 * C : 0);
#pragma omp parallel num_threads(max_threads)
  {
    const int nt = omp_get_num_threads();
    float* pw = part.empty() ? nullptr : part.data() + size_t(omp_get_thread_num()) * 2 * C;
    float* pb = pw ? pw + C : nullptr;
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* x = inp + long(n) * C;
      const float* dy = dout + long(n) * C;
      const float m = mean[n], r = rstd[n];
      if (dinp) {
        float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
        for (int c = 0; c < C; ++c) {
          const float g = dy[c] * weight[c];
          sg += g;
          sgx += g * (x[c] - m) * r;
        }
        const float mg = sg / float(C), mgx = sgx / float(C);
        float* dx = dinp + long(n) * C;
#pragma omp simd
        for (int c = 0; c < C; ++c)
          dx[c] += r * (dy[c] * weight[c] - mg - (x[c] - m) * r * mgx);
      }
      if (pw) {
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          pw[c] += dy[c] * (x[c] - m) * r;
          pb[c] += dy[c];
        }
      }
    }
    // The implicit barrier of the loop above makes every partial complete here.
    if (pw) {
#pragma omp for schedule(static)
      for (int c = 0; c < C; ++c) {
        float sw = 0.0f, sb = 0.0f;
        for (int t = 0; t < nt; ++t) {
          sw += part[size_t(t) * 2 * C + c];
          sb += part[size_t(t) * 2 * C + C + c];
        }
        if (dweight) dweight[c] += sw;
        if (dbias) dbias[c] += sb;
      }
    }
  }
}

}  // namespace distill
