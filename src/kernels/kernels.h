// The compute kernels: one op per .cpp file in this folder, forward and backward side by side.
// Naive oracles with the same signatures live in kernels/ref/ (namespace distill::ref).
//
// Conventions (as in llm.c):
// - Every tensor is row-major fp32 unless stated. B batch, T time, C channels, N = B*T rows.
// - Backward functions ACCUMULATE (+=) into every gradient they write (dinp, dweight, ...): the
//   caller zeroes gradient buffers once per step. A null gradient pointer means "not needed".
// - Forward functions overwrite their outputs, and cache what backward needs (mean, rstd, att).
// - Kernels are deterministic for a fixed OMP thread count (static schedules, fixed reductions).
#pragma once
#include <omp.h>

#include <cstddef>
#include <cstdint>

namespace distill {

// Element count below which an elementwise kernel runs on one thread: waking the OpenMP team
// costs more than the work (inference rows, decode steps of one token).
inline constexpr size_t kParallelMin = 32768;

// True when a parallel region pays: `big` work, more than one thread allowed, and not already
// inside a region (nested regions run on one thread).
inline bool team_pays(bool big) {
  return big && omp_get_max_threads() > 1 && !omp_in_parallel();
}

// body(i) for i in [0, n): on the OpenMP team with a static schedule when team_pays(big), else a
// plain loop on this thread. Why not `#pragma omp parallel for if (big)`: libgomp sets up a
// team of one even when the clause is false, and on this project's VMs that took 1.3-1.5 us per
// region (a futex wake, i.e. a system call, included), as much as with OMP_NUM_THREADS=1. A
// gpt2-mini decode step crossed 136 regions: about 190 us of a 660 us step on one thread.
template <class Index, class Body>
inline void parallel_for_if(Index n, bool big, const Body& body) {
  if (team_pays(big)) {
#pragma omp parallel for schedule(static)
    for (Index i = 0; i < n; ++i) body(i);
  } else {
    for (Index i = 0; i < n; ++i) body(i);
  }
}

// part(nt, t) once on each of the team's nt threads (t = 0..nt-1) when team_pays(big), else
// part(1, 0) on this thread: for kernels that split their own work into per-thread ranges (each
// thread streams its own part of a weight matrix). No team of one, as in parallel_for_if.
template <class Part>
inline void team_parts_if(bool big, const Part& part) {
  if (!team_pays(big)) return part(1, 0);
#pragma omp parallel
  part(omp_get_num_threads(), omp_get_thread_num());
}

// ---- embedding.cpp ----
// out (B,T,C) = wte[ids[b,t]] (+ wpe[t] when wpe != nullptr: learned positions, GPT-2).
// ids (B,T) must be in [0, V); wte (V,C); wpe (>=T, C).
void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C);
// dwte (V,C) += scatter of dout rows; dwpe (>=T,C) += sum over batch.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C);

// ---- layernorm.cpp ---- y = (x - mean) * rstd * weight + bias, over the last dim C.
// inp, out (N,C); weight, bias (C); mean, rstd (N) cached for backward.
// out16, when not null (here, in rmsnorm_forward and merge_heads_forward), also receives out
// rounded to bf16, for the next matmul at BF16 (matmul_forward_bf16_input).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps, uint16_t* out16 = nullptr);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

// ---- rmsnorm.cpp ---- y = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps) (HF LlamaRMSNorm).
// inp, out (N,C); weight (C); rstd (N). Also used for Qwen3's per-head q/k norm (C = head_dim).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps, uint16_t* out16 = nullptr);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C);

// ---- matmul.cpp ---- a linear layer with HF nn.Linear weight layout, through oneDNN.
enum class MatmulPrecision {
  F32,   // fp32 inputs, fp32 accumulate
  BF16,  // inputs rounded to bf16 (round-to-nearest-even), fp32 accumulate and output
};
// A weight (OC,IC) rounded to bf16 and stored in the blocked layouts oneDNN's bf16 matmul reads
// without repacking it on every call (measured +6-29% per product at the bench models' shapes):
// `fwd` for the forward's inp @ weight^T, `dinp` for the backward's dout @ weight. A training
// model packs one of each per step (Bf16Copies), at its forward. Both null: none.
struct Bf16Weight {
  const uint16_t* fwd = nullptr;
  const uint16_t* dinp = nullptr;
};
// uint16 elements of weight (OC,IC) packed for the forward (for_dinp false) or the dinp product.
size_t bf16_packed_weight_size(int OC, int IC, bool for_dinp);
// dst (bf16_packed_weight_size elements, 64-byte aligned) = weight rounded to bf16 (round to
// nearest even) in that product's layout.
void pack_bf16_weight(uint16_t* dst, const float* weight, int OC, int IC, bool for_dinp);

// out (N,OC) = inp (N,IC) @ weight(OC,IC)^T + bias(OC) (bias may be null).
// At BF16 (ignored at F32): weight16.fwd, when not null, is weight packed (pack_bf16_weight),
// used instead of rounding weight again; inp16, when not null, receives inp rounded to bf16
// (N,IC) for the backward's dweight product to reuse.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int IC, int OC, MatmulPrecision prec = MatmulPrecision::F32,
                    Bf16Weight weight16 = {}, uint16_t* inp16 = nullptr);
// matmul_forward at BF16 from an input already rounded to bf16 (inp16 (N,IC)); weight16 as
// there (or none: weight is rounded).
void matmul_forward_bf16_input(float* out, const uint16_t* inp16, const float* weight,
                               Bf16Weight weight16, const float* bias, int N, int IC, int OC);
// dinp (N,IC) += dout (N,OC) @ weight (OC,IC); dweight (OC,IC) += dout^T @ inp;
// dbias (OC) += column sums of dout. Any of dinp, dweight, dbias may be null.
// overwrite_dinp: dinp = instead of += (saves zeroing it first). At BF16: weight16.dinp, when not
// null, is weight packed for dinp's product; inp16 (N,IC) inp already in bf16 (the forward's
// inp16), or null.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int IC, int OC,
                     MatmulPrecision prec = MatmulPrecision::F32, Bf16Weight weight16 = {},
                     bool overwrite_dinp = false, const uint16_t* inp16 = nullptr);

// matmul_backward at BF16 with dout given already rounded (dout16 (N,OC)) and its dbias already
// summed: dinp and dweight only, as there.
void matmul_backward_bf16_dout(float* dinp, float* dweight, const uint16_t* dout16,
                               const float* inp, const float* weight, int N, int IC, int OC,
                               Bf16Weight weight16 = {}, bool overwrite_dinp = false,
                               const uint16_t* inp16 = nullptr);

// ---- matmul_rows.cpp ---- the forward above for a few rows (decode steps), F32 only: weights
// streamed once for all M rows, no oneDNN call. matmul_forward uses it for N <= kMatmulRowsMax.
// Results do not depend on M or the thread count (each element is summed in one fixed order).
inline constexpr int kMatmulRowsMax = 16;
void matmul_rows_forward(float* out, const float* inp, const float* weight, const float* bias,
                         int M, int IC, int OC);

// General row-major GEMM used by the kernels above and by attention:
// C (M,N) = alpha * op(A) @ op(B) + beta * C, op(X) = X^T when trans_x. lda/ldb/ldc are row strides.
// beta must be 0 (overwrite) or 1 (accumulate): the only two the kernels need.
// Runs single-threaded when called inside an OpenMP parallel region.
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc,
          MatmulPrecision prec = MatmulPrecision::F32);
// The same with both operands already in bf16 (fp32 accumulate and output).
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc);
// dst (rows, cols) dense = src (rows, cols; row stride ld) rounded to bf16, round-to-nearest-even
// as oneDNN's reorders do. Threaded unless inside a parallel region or small.
void round_to_bf16(uint16_t* dst, const float* src, int rows, int cols, int ld);

// ---- heads.cpp ---- layout changes around attention.
// qkv (B,T,(NH+2*NKV)*HD), rows laid out [q heads | k heads | v heads]
//   -> q (B,NH,T,HD), k (B,NKV,T,HD), v (B,NKV,T,HD).
void split_heads_forward(float* q, float* k, float* v, const float* qkv, int B, int T, int NH,
                         int NKV, int HD);
// overwrite: dqkv = instead of += (a null dq/dk/dv then writes zeros), as merge_heads_backward's.
void split_heads_backward(float* dqkv, const float* dq, const float* dk, const float* dv, int B,
                          int T, int NH, int NKV, int HD, bool overwrite = false);
// x (B,NH,T,HD) -> out (B,T,NH*HD).
void merge_heads_forward(float* out, const float* x, int B, int T, int NH, int HD,
                         uint16_t* out16 = nullptr);
void merge_heads_backward(float* dx, const float* dout, int B, int T, int NH, int HD,
                          bool overwrite = false);

// ---- rope.cpp ---- rotary position embedding, HF "rotate_half" convention: for i < HD/2,
// (x[i], x[i+HD/2]) is rotated by angle pos * inv_freq[i].
struct RopeScaling {
  enum class Type { None, Linear, Llama3 } type = Type::None;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;       // llama3 only
  float high_freq_factor = 4.0f;      // llama3 only
  int original_max_position = 8192;   // llama3 only
};
// inv_freq (HD/2): theta^(-2i/HD), then adjusted by the scaling as transformers does.
void rope_inv_freq(float* inv_freq, int HD, float theta, const RopeScaling& scaling);
// cos, sin (T,HD/2) for positions pos0 .. pos0+T-1.
void rope_table(float* cos, float* sin, const float* inv_freq, int T, int HD, int pos0 = 0);
// x (B,H,T,HD) rotated in place with the table (T,HD/2).
void rope_forward(float* x, const float* cos, const float* sin, int B, int H, int T, int HD);
// dx (B,H,T,HD) rotated back in place (the transpose of the forward rotation).
void rope_backward(float* dx, const float* cos, const float* sin, int B, int H, int T, int HD);

// ---- attention.cpp ---- causal scaled dot-product attention with grouped-query heads.
// q (B,NH,T,HD), k, v (B,NKV,T,HD); query head h reads kv head h / (NH/NKV).
// att (B,NH,T,T) softmax probabilities, cached for backward (entries above the diagonal are 0);
// out (B,NH,T,HD). scale = 1/sqrt(HD).
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int NH, int NKV, int HD,
                       MatmulPrecision prec = MatmulPrecision::F32);
// datt is scratch of (B,NH,T,T) (overwritten). dq, dk, dv accumulate.
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, const float* k, const float* v, int B,
                        int T, int NH, int NKV, int HD,
                        MatmulPrecision prec = MatmulPrecision::F32);

// ---- activations.cpp ----
// GELU, tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh"). inp, out (n).
// out16, when not null (here and in swiglu_forward), also receives out rounded to bf16: the next
// matmul's input at MatmulPrecision::BF16 (matmul_forward_bf16_input), rounded while in cache.
void gelu_forward(float* out, const float* inp, size_t n, uint16_t* out16 = nullptr);
// overwrite (here and in swiglu_backward): dinp = instead of +=, saving the zeroing pass.
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n,
                   bool overwrite = false);
// SwiGLU: gate_up (N,2F) rows laid out [gate | up]; out (N,F) = silu(gate) * up.
void swiglu_forward(float* out, const float* gate_up, int N, int F, uint16_t* out16 = nullptr);
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int F,
                     bool overwrite = false);
// The two backwards above at MatmulPrecision::BF16, where their output is only the dout of the
// matmul before them (matmul_backward_bf16_dout): the input gradient goes out rounded to bf16
// (dinp16 (N,F) for the GELU over (N,F), dgate_up16 (N,2F)), with no fp32 copy written and read
// back; dbias (F or 2F), when not null, += its column sums in fp32, summed as matmul_backward
// sums dbias (sum_rows_by_thread). Same values as the fp32 kernels, then rounding.
void gelu_backward_bf16(uint16_t* dinp16, float* dbias, const float* inp, const float* dout,
                        int N, int F);
void swiglu_backward_bf16(uint16_t* dgate_up16, float* dbias, const float* dout,
                          const float* gate_up, int N, int F);

// ---- residual.cpp ---- out (n) = a + b; backward da += dout, db += dout.
void residual_forward(float* out, const float* a, const float* b, size_t n);
// p (n) = 0, threaded when large: zeroing a gradient buffer before kernels accumulate into it.
void zero_floats(float* p, size_t n);
void residual_backward(float* da, float* db, const float* dout, size_t n);

// ---- crossentropy.cpp ---- softmax + cross-entropy over the vocabulary, per position.
// logits (N,V); targets (N): a target < 0 is masked out (HF's ignore_index -100): its loss is 0
// and it gets no gradient. losses (N) = -log softmax(logits)[target]; lse (N) = logsumexp.
void crossentropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                          int N, int V);
// dlogits (N,V) += dlosses[n] * (softmax(logits[n]) - onehot(target[n])). dlogits may alias
// logits only through crossentropy_fused below.
void crossentropy_backward(float* dlogits, const float* logits, const float* lse,
                           const int32_t* targets, const float* dlosses, int N, int V);
// Fused forward + backward for training: losses (N) as above, and logits (N,V) is OVERWRITTEN
// with dloss/dlogits = dlosses[n] * (softmax - onehot). Saves a (N,V) buffer and a pass.
void crossentropy_fused(float* logits, float* losses, const int32_t* targets,
                        const float* dlosses, int N, int V);

}  // namespace distill
