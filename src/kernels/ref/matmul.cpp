// Reference linear layer and GEMM: triple loops, double accumulators. In BF16 mode both operands
// of every product are rounded to bf16 first (products of bf16 values are exact in double).
#include "kernels/ref/ref.h"

namespace distill::ref {
namespace {
float mm_operand(float x, MatmulPrecision prec) {
  return prec == MatmulPrecision::BF16 ? round_bf16(x) : x;
}
}  // namespace

// out (N,OC) = inp (N,IC) @ weight (OC,IC)^T + bias (OC).
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int IC, int OC, MatmulPrecision prec) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias ? bias[o] : 0.0;
      for (int i = 0; i < IC; ++i)
        s += double(mm_operand(inp[long(n) * IC + i], prec)) *
             mm_operand(weight[long(o) * IC + i], prec);
      out[long(n) * OC + o] = float(s);
    }
}

// dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums of dout (not a product,
// so never rounded).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int IC, int OC,
                     MatmulPrecision prec) {
  if (dinp)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < IC; ++i) {
        double s = 0.0;
        for (int o = 0; o < OC; ++o)
          s += double(mm_operand(dout[long(n) * OC + o], prec)) *
               mm_operand(weight[long(o) * IC + i], prec);
        dinp[long(n) * IC + i] += float(s);
      }
  if (dweight)
    for (int o = 0; o < OC; ++o)
      for (int i = 0; i < IC; ++i) {
        double s = 0.0;
        for (int n = 0; n < N; ++n)
          s += double(mm_operand(dout[long(n) * OC + o], prec)) *
               mm_operand(inp[long(n) * IC + i], prec);
        dweight[long(o) * IC + i] += float(s);
      }
  if (dbias)
    for (int o = 0; o < OC; ++o) {
      double s = 0.0;
      for (int n = 0; n < N; ++n) s += dout[long(n) * OC + o];
      dbias[o] += float(s);
    }
}

// C (M,N) = alpha op(A) op(B) + beta C; op(A) is (M,K), op(B) is (K,N). beta == 0 does not read C
// (BLAS convention).
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, MatmulPrecision prec) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        const float a = trans_a ? A[long(k) * lda + i] : A[long(i) * lda + k];
        const float b = trans_b ? B[long(j) * ldb + k] : B[long(k) * ldb + j];
        s += double(mm_operand(a, prec)) * mm_operand(b, prec);
      }
      float& c = C[long(i) * ldc + j];
      c = float(double(alpha) * s + (beta == 0.0f ? 0.0 : double(beta) * c));
    }
}

}  // namespace distill::ref
