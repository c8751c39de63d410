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

// Decode kernels at 3..8 rows of x: the weight stream is read at a slower pace than at one row
// (8 FMAs and 8 x loads per weight vector), and the hardware prefetchers then fall behind. Asking
// for the line 4 KB ahead in the weight matrix (rows are contiguous, so this runs into the next
// rows) took llama-110m f32 batch-8 decode from 323 to 428 tok/s (2 threads, Zen 5); 0.5-2 KB
// ahead gained less, 8-16 KB the same. At 1-2 rows it cost 2-5%, so those rows go without.
constexpr int kWeightPrefetchBytes = 4096;
inline void prefetch_ahead(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kWeightPrefetchBytes, _MM_HINT_T0);
}
template <int MB>
inline void prefetch_weights(const void* p) {
  if constexpr (MB > 2) prefetch_ahead(p);
}

}  // namespace distill
#endif
