// Layout changes around attention: split a fused qkv projection into heads, merge heads back.
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {

// qkv (B,T,(NH+2*NKV)*HD) rows [q heads | k heads | v heads] -> q (B,NH,T,HD), k, v (B,NKV,T,HD).
// One iteration per (b, head, t) destination row: each copies HD contiguous floats.
void split_heads_forward(float* q, float* k, float* v, const float* qkv, int B, int T, int NH,
                         int NKV, int HD) {
  const int H3 = NH + 2 * NKV;
  const long row = long(H3) * HD;
#pragma omp parallel for collapse(3) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H3; ++h)
      for (int t = 0; t < T; ++t) {
        const float* src = qkv + (long(b) * T + t) * row + long(h) * HD;
        float* dst;
        if (h < NH) dst = q + ((long(b) * NH + h) * T + t) * HD;
        else if (h < NH + NKV) dst = k + ((long(b) * NKV + (h - NH)) * T + t) * HD;
        else dst = v + ((long(b) * NKV + (h - NH - NKV)) * T + t) * HD;
        std::memcpy(dst, src, sizeof(float) * HD);
      }
}

// dqkv (B,T,(NH+2*NKV)*HD) += the inverse permutation of dq, dk, dv (any may be null: no gradient).
void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B,
                          int T, int NH, int NKV, int HD, bool overwrite) {
  const int H3 = NH + 2 * NKV;
  const long row = long(H3) * HD;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H3; ++h) {
        const float* src;
        if (h < NH) src = dq ? dq + ((long(b) * NH + h) * T + t) * HD : nullptr;
        else if (h < NH + NKV) src = dk ? dk + ((long(b) * NKV + (h - NH)) * T + t) * HD : nullptr;
        else src = dv ? dv + ((long(b) * NKV + (h - NH - NKV)) * T + t) * HD : nullptr;
        float* dst = dqkv + (long(b) * T + t) * row + long(h) * HD;
        if (!src) {
          if (overwrite) std::memset(dst, 0, sizeof(float) * HD);
          continue;
        }
        if (overwrite) {
          std::memcpy(dst, src, sizeof(float) * HD);
          continue;
        }
#pragma omp simd
        for (int d = 0; d < HD; ++d) dst[d] += src[d];
      }
}

// x (B,NH,T,HD) -> out (B,T,NH*HD).
void merge_heads_forward(float* out, const float* x, int B, int T, int NH, int HD,
                         uint16_t* out16) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < NH; ++h) {
        const long at = ((long(b) * T + t) * NH + h) * HD;
        const float* src = x + ((long(b) * NH + h) * T + t) * HD;
        std::memcpy(out + at, src, sizeof(float) * HD);
        if (out16) bf16_round_row(out16 + at, src, HD);
      }
}

// dx (B,NH,T,HD) += dout (B,T,NH*HD) permuted.
void merge_heads_backward(float* dx, const float* dout, int B, int T, int NH, int HD,
                          bool overwrite) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        float* dst = dx + ((long(b) * NH + h) * T + t) * HD;
        const float* src = dout + ((long(b) * T + t) * NH + h) * HD;
        if (overwrite) {
          std::memcpy(dst, src, sizeof(float) * HD);
          continue;
        }
#pragma omp simd
        for (int d = 0; d < HD; ++d) dst[d] += src[d];
      }
}

}  // namespace distill
