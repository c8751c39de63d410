// Causal scaled dot-product attention with grouped-query heads.
//
// The T x T x HD products per head go through gemm (oneDNN, single-threaded inside the OpenMP
// loop over heads): attention is ~8% of a gpt2-small-ish step's FLOPs and naive loops run it
// 10-20x slower than the GEMM kernels. Rows are processed in blocks of kRowBlock queries, and a
// block only multiplies against the keys it can see (columns < end of the block): for T = 256
// that skips 6 of the 16 blocks of the score matrix (37% of attention's FLOPs) while keeping
// the products large enough to run near GEMM speed. At BF16 on a CPU with AVX512-BF16 the
// kernels of attention_bf16.cpp run instead.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention_bf16.h"
#include "kernels/kernels.h"

namespace distill {
namespace {
constexpr int kRowBlock = 64;
}

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int NH, int NKV, int HD, MatmulPrecision prec) {
  if (prec == MatmulPrecision::BF16 && attention_forward_bf16(out, att, q, k, v, B, T, NH, NKV, HD))
    return;
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HD));
  const size_t head = size_t(T) * HD, square = size_t(T) * T;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    const float* qh = q + size_t(bh) * head;
    const float* kh = k + (size_t(b) * NKV + h / group) * head;
    const float* vh = v + (size_t(b) * NKV + h / group) * head;
    float* a = att + size_t(bh) * square;
    float* o = out + size_t(bh) * head;
    for (int r0 = 0; r0 < T; r0 += kRowBlock) {
      const int rows = std::min(kRowBlock, T - r0), cols = r0 + rows;
      float* ab = a + size_t(r0) * T;
      gemm(false, true, rows, cols, HD, scale, qh + size_t(r0) * HD, HD, kh, HD, 0.0f, ab, T,
           prec);
      for (int i = r0; i < r0 + rows; i++) softmax_causal_row(a + size_t(i) * T, i, T);
      gemm(false, false, rows, HD, cols, 1.0f, ab, T, vh, HD, 0.0f, o + size_t(r0) * HD, HD,
           prec);
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, const float* k, const float* v, int B,
                        int T, int NH, int NKV, int HD, MatmulPrecision prec) {
  if (prec == MatmulPrecision::BF16 &&
      attention_backward_bf16(dq, dk, dv, datt, dout, att, q, k, v, B, T, NH, NKV, HD))
    return;
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HD));
  const size_t head = size_t(T) * HD, square = size_t(T) * T;
  // One task per kv head: the query heads of a group all accumulate into the same dk, dv, so they
  // run in one task, in order (race-free and deterministic).
#pragma omp parallel for schedule(static)
  for (int bkv = 0; bkv < B * NKV; bkv++) {
    const int b = bkv / NKV, kvh = bkv % NKV;
    const float* kh = k + size_t(bkv) * head;
    const float* vh = v + size_t(bkv) * head;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
      const size_t bh = size_t(b) * NH + h;
      const float* a = att + bh * square;
      const float* qh = q + bh * head;
      const float* dout_h = dout + bh * head;
      float* da = datt + bh * square;
      for (int r0 = 0; r0 < T; r0 += kRowBlock) {
        const int rows = std::min(kRowBlock, T - r0), cols = r0 + rows;
        const float* ab = a + size_t(r0) * T;
        float* dab = da + size_t(r0) * T;
        const float* dob = dout_h + size_t(r0) * HD;
        // dv[:cols] += att[block, :cols]^T @ dout[block]; datt[block, :cols] = dout[block] @ v^T
        if (dv) gemm(true, false, cols, HD, rows, 1.0f, ab, T, dob, HD, 1.0f,
                     dv + size_t(bkv) * head, HD, prec);
        gemm(false, true, rows, cols, HD, 1.0f, dob, HD, vh, HD, 0.0f, dab, T, prec);
        // Softmax backward in place: dpre = att * (datt - sum_j datt*att), causal part only.
        for (int i = r0; i < r0 + rows; i++)
          softmax_causal_row_backward(da + size_t(i) * T, a + size_t(i) * T, i, T);
        // dq[block] += scale * dpre[block, :cols] @ k[:cols];
        // dk[:cols] += scale * dpre[block, :cols]^T @ q[block]
        if (dq) gemm(false, false, rows, HD, cols, scale, dab, T, kh, HD, 1.0f,
                     dq + bh * head + size_t(r0) * HD, HD, prec);
        if (dk) gemm(true, false, cols, HD, rows, scale, dab, T, qh + size_t(r0) * HD, HD, 1.0f,
                     dk + size_t(bkv) * head, HD, prec);
      }
    }
  }
}

}  // namespace distill
