// Token (+ learned position) embedding, forward and backward.
#include <omp.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/kernels.h"

namespace distill {

// out (B,T,C) = wte[ids[b,t]] (+ wpe[t]). One row per (b,t); rows are independent.
void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C) {
  const long N = long(B) * T;
  // V is not passed, so only the lower bound can be checked; done before the parallel region
  // because an exception must not escape an OpenMP region.
  for (long n = 0; n < N; ++n)
    if (ids[n] < 0) throw Error("[embedding_forward] token id {} at row {} is negative", ids[n], n);
#pragma omp parallel for schedule(static)
  for (long n = 0; n < N; ++n) {
    float* o = out + n * C;
    const float* w = wte + long(ids[n]) * C;
    if (wpe) {
      const float* p = wpe + (n % T) * long(C);
#pragma omp simd
      for (int c = 0; c < C; ++c) o[c] = w[c] + p[c];
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) o[c] = w[c];
    }
  }
}

// dwte (V,C) += scatter of dout (B,T,C) rows by ids; dwpe (>=T,C) += sum over b of dout[b,t].
// Repeated ids make a row-parallel scatter racy, so each thread owns a block of channels and walks
// all rows for it: no races, no atomics, and every output element is summed in row order, so the
// result is bit-identical for any thread count. Blocks are multiples of 16 floats (one 64-byte
// cache line) so two threads never write the same line.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C) {
  const long N = long(B) * T;
  if (dwte)
    for (long n = 0; n < N; ++n)
      if (ids[n] < 0)
        throw Error("[embedding_backward] token id {} at row {} is negative", ids[n], n);
  if (!dwte && !dwpe) return;
  constexpr int kLine = 16;
  const int lines = (C + kLine - 1) / kLine;
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    // Static split of the cache lines: thread tid gets lines [l0, l1).
    const int l0 = int(long(lines) * tid / nt), l1 = int(long(lines) * (tid + 1) / nt);
    const int c0 = l0 * kLine, c1 = std::min(C, l1 * kLine);
    for (long n = 0; n < N && c0 < c1; ++n) {
      const float* d = dout + n * C;
      if (dwte) {
        float* g = dwte + long(ids[n]) * C;
#pragma omp simd
        for (int c = c0; c < c1; ++c) g[c] += d[c];
      }
      if (dwpe) {
        float* g = dwpe + (n % T) * long(C);
#pragma omp simd
        for (int c = c0; c < c1; ++c) g[c] += d[c];
      }
    }
  }
}

}  // namespace distill
