// Reference head split/merge: index arithmetic written out per element.
#include "kernels/ref/ref.h"

namespace distill::ref {

// qkv (B,T,(NH+2NKV)*HD) -> q (B,NH,T,HD), k, v (B,NKV,T,HD).
void split_heads_forward(float* q, float* k, float* v, const float* qkv, int B, int T, int NH,
                         int NKV, int HD) {
  const int W = (NH + 2 * NKV) * HD;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < HD; ++d) {
        const float* row = qkv + (long(b) * T + t) * W;
        for (int h = 0; h < NH; ++h) q[((long(b) * NH + h) * T + t) * HD + d] = row[h * HD + d];
        for (int h = 0; h < NKV; ++h) {
          k[((long(b) * NKV + h) * T + t) * HD + d] = row[(NH + h) * HD + d];
          v[((long(b) * NKV + h) * T + t) * HD + d] = row[(NH + NKV + h) * HD + d];
        }
      }
}

void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B,
                          int T, int NH, int NKV, int HD) {
  const int W = (NH + 2 * NKV) * HD;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < HD; ++d) {
        float* row = dqkv + (long(b) * T + t) * W;
        for (int h = 0; h < NH; ++h)
          if (dq) row[h * HD + d] += dq[((long(b) * NH + h) * T + t) * HD + d];
        for (int h = 0; h < NKV; ++h) {
          if (dk) row[(NH + h) * HD + d] += dk[((long(b) * NKV + h) * T + t) * HD + d];
          if (dv) row[(NH + NKV + h) * HD + d] += dv[((long(b) * NKV + h) * T + t) * HD + d];
        }
      }
}

// x (B,NH,T,HD) -> out (B,T,NH*HD).
void merge_heads_forward(float* out, const float* x, int B, int T, int NH, int HD) {
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < HD; ++d)
          out[(long(b) * T + t) * NH * HD + h * HD + d] = x[((long(b) * NH + h) * T + t) * HD + d];
}

void merge_heads_backward(float* dx, const float* dout, int B, int T, int NH, int HD) {
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < HD; ++d)
          dx[((long(b) * NH + h) * T + t) * HD + d] += dout[(long(b) * T + t) * NH * HD + h * HD + d];
}

}  // namespace distill::ref
