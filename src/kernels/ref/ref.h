// Naive reference kernels: the oracles the optimized kernels in kernels/ are tested against.
// Same signatures and conventions as kernels/kernels.h (backward accumulates with +=, null
// gradient = not needed), written for obvious correctness: plain loops in the order of the math,
// double accumulators, no OpenMP, no blocking. They are NOT part of distill_lib: a test compiles
// them in through ref_all.inc.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace distill::ref {

// fp32 -> bf16 -> fp32 with round-to-nearest-even (the BF16 matmul mode's input rounding).
inline float round_bf16(float x) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return std::bit_cast<float>(bits & 0xffff0000u);
}

void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C);

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int IC, int OC, MatmulPrecision prec = MatmulPrecision::F32);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int IC, int OC,
                     MatmulPrecision prec = MatmulPrecision::F32);
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc,
          MatmulPrecision prec = MatmulPrecision::F32);

void split_heads_forward(float* q, float* k, float* v, const float* qkv, int B, int T, int NH,
                         int NKV, int HD);
void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B,
                          int T, int NH, int NKV, int HD);
void merge_heads_forward(float* out, const float* x, int B, int T, int NH, int HD);
void merge_heads_backward(float* dx, const float* dout, int B, int T, int NH, int HD);

void rope_inv_freq(float* inv_freq, int HD, float theta, const RopeScaling& scaling);
void rope_table(float* cos, float* sin, const float* inv_freq, int T, int HD, int pos0 = 0);
void rope_forward(float* x, const float* cos, const float* sin, int B, int H, int T, int HD);
void rope_backward(float* dx, const float* cos, const float* sin, int B, int H, int T, int HD);

// prec is accepted for signature parity and ignored: the reference attention is exact (double);
// tests compare the BF16 mode against it with a bf16-sized tolerance.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int NH, int NKV, int HD,
                       MatmulPrecision prec = MatmulPrecision::F32);
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, const float* k, const float* v, int B,
                        int T, int NH, int NKV, int HD,
                        MatmulPrecision prec = MatmulPrecision::F32);

void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);
void swiglu_forward(float* out, const float* gate_up, int N, int F);
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int F);

void residual_forward(float* out, const float* a, const float* b, size_t n);
void residual_backward(float* da, float* db, const float* dout, size_t n);

void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V);
void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int N, int V);
void crossentropy_fused(float* logits, float* losses, const int32_t* targets,
                        const float* dlosses, int N, int V);

}  // namespace distill::ref
