// Causal scaled dot-product attention with grouped-query heads.
//
// The four T x T x HD products per head go through gemm (oneDNN, single-threaded inside the
// OpenMP loop over heads): attention is ~10% of a gpt2-small-ish step's FLOPs and naive loops run
// it 10-20x slower than the GEMM kernels. The full T x T score matrix is computed and the upper
// triangle discarded: wasting half of those FLOPs is cheaper than many small triangular blocks.
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int NH, int NKV, int HD, MatmulPrecision prec) {
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
    gemm(false, true, T, T, HD, scale, qh, HD, kh, HD, 0.0f, a, T, prec);
    for (int i = 0; i < T; i++) {
      float* row = a + size_t(i) * T;
      float mx = row[0];
      for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j <= i; j++) {
        row[j] = fast_exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int j = 0; j <= i; j++) row[j] *= inv;
      std::memset(row + i + 1, 0, sizeof(float) * (T - i - 1));
    }
    gemm(false, false, T, HD, T, 1.0f, a, T, vh, HD, 0.0f, out + size_t(bh) * head, HD, prec);
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, const float* k, const float* v, int B,
                        int T, int NH, int NKV, int HD, MatmulPrecision prec) {
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
      const float* dout_h = dout + bh * head;
      float* da = datt + bh * square;
      // dv += att^T @ dout; datt = dout @ v^T
      if (dv) gemm(true, false, T, HD, T, 1.0f, a, T, dout_h, HD, 1.0f, dv + size_t(bkv) * head,
                   HD, prec);
      gemm(false, true, T, T, HD, 1.0f, dout_h, HD, vh, HD, 0.0f, da, T, prec);
      // Softmax backward in place: dpre = att * (datt - sum_j datt*att), causal part only.
      for (int i = 0; i < T; i++) {
        const float* arow = a + size_t(i) * T;
        float* drow = da + size_t(i) * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j <= i; j++) dot += drow[j] * arow[j];
#pragma omp simd
        for (int j = 0; j <= i; j++) drow[j] = arow[j] * (drow[j] - dot);
        std::memset(drow + i + 1, 0, sizeof(float) * (T - i - 1));
      }
      // dq += scale * dpre @ k; dk += scale * dpre^T @ q
      if (dq) gemm(false, false, T, HD, T, scale, da, T, kh, HD, 1.0f, dq + bh * head, HD, prec);
      if (dk) gemm(true, false, T, HD, T, scale, da, T, q + bh * head, HD, 1.0f,
                   dk + size_t(bkv) * head, HD, prec);
    }
  }
}

}  // namespace distill
