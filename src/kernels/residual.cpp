// Residual connection: out = a + b.
#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"

namespace distill {

// out, a, b (n). out may alias a or b (in-place residual add). Chunks with a plain `omp simd`
// inner loop: under `parallel for simd` GCC 12 guards the vector loop with an overlap check and
// runs the in-place call scalar (see gelu_forward).
void residual_forward(float* out, const float* a, const float* b, size_t n) {
  constexpr size_t kChunk = 4096;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for_if(chunks, n > kParallelMin, [&](size_t c) {
    const size_t end = std::min(n, (c + 1) * kChunk);
#pragma omp simd
    for (size_t i = c * kChunk; i < end; ++i) out[i] = a[i] + b[i];
  });
}

void zero_floats(float* p, size_t n) {
  if (n <= kParallelMin) {
    std::memset(p, 0, n * sizeof(float));
    return;
  }
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] = 0.0f;
}

// da += dout, db += dout (either may be null). One pass over dout when both are wanted.
void residual_backward(float* da, float* db, const float* dout, size_t n) {
  if (da && db) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) {
      const float d = dout[i];
      da[i] += d;
      db[i] += d;
    }
  } else if (da || db) {
    float* g = da ? da : db;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; ++i) g[i] += dout[i];
  }
}

}  // namespace distill
