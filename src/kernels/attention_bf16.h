// Attention at MatmulPrecision::BF16 with AVX512-BF16 dot products (attention_bf16.cpp): the
// same contract as attention_forward/attention_backward in kernels.h, which call these first.
#pragma once

namespace distill {

// True when the build and the CPU have AVX512-BF16 and the kernel ISA (set_kernel_isa) is
// AVX-512; otherwise the functions below return false and do nothing.
bool attention_bf16_available();
bool attention_forward_bf16(float* out, float* att, const float* q, const float* k,
                            const float* v, int B, int T, int NH, int NKV, int HD);
bool attention_backward_bf16(float* dq, float* dk, float* dv, float* datt, const float* dout,
                             const float* att, const float* q, const float* k, const float* v,
                             int B, int T, int NH, int NKV, int HD);

// One causal softmax row i of a (T,T) score matrix, in place (entries above i set to 0), and
// its backward: drow = arow * (drow - sum(drow * arow)) over j <= i, 0 above.
void softmax_causal_row(float* row, int i, int T);
void softmax_causal_row_backward(float* drow, const float* arow, int i, int T);

}  // namespace distill
