// Reference embedding: one row at a time.
#include "kernels/ref/ref.h"

namespace distill::ref {

void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        const long n = long(b) * T + t;
        double v = wte[long(ids[n]) * C + c];
        if (wpe) v += wpe[long(t) * C + c];
        out[n * C + c] = float(v);
      }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        const long n = long(b) * T + t;
        if (dwte) dwte[long(ids[n]) * C + c] += dout[n * C + c];
        if (dwpe) dwpe[long(t) * C + c] += dout[n * C + c];
      }
}

}  // namespace distill::ref
