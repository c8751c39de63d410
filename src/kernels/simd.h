// Small AVX-512 helpers the hand-vectorised kernels share (matmul_rows.cpp, qmatmul.cpp).
#pragma once
#if defined(__AVX512F__)
#include <immintrin.h>

namespace distill {

// Sum of the 16 lanes: lane i + lane i+8, then +4, +2, +1, as _mm512_reduce_add_ps does. The
// all-ones masked forms are used because GCC 12's unmasked shuffles start from an "undefined"
// register that trips -Wuninitialized.
inline float lane_sum(__m512 a) {
  const __mmask16 all = 0xffff;
  a = _mm512_add_ps(a, _mm512_maskz_shuffle_f32x4(all, a, a, 0x4e));
  a = _mm512_add_ps(a, _mm512_maskz_shuffle_f32x4(all, a, a, 0xb1));
  a = _mm512_add_ps(a, _mm512_maskz_permute_ps(all, a, 0x4e));
  a = _mm512_add_ps(a, _mm512_maskz_permute_ps(all, a, 0xb1));
  return _mm512_cvtss_f32(a);
}

}  // namespace distill
#endif
