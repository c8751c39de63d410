// A linear layer for a few rows: the decode steps of generation (one row per sequence).
//
// Why not oneDNN here: at M = 1 its matmul primitive ran a llama-bench decode step at about half
// the speed of llama.cpp (90% of the samples in its JIT kernels), and each call also creates
// memory objects and a stream. A decode step is bound by streaming the weights from memory, so
// this kernel reads each weight once per call and uses it for all M rows.
//
// Access order: one weight row at a time, front to back, so the whole matrix streams
// sequentially. Measured here (50 MB of weights, one thread, 384-float rows): 25 GB/s this way,
// 11-12 GB/s when 2..8 rows are read interleaved (register tiles of several rows), with or
// without software prefetch: the hardware prefetchers lose track of many short streams. The
// x rows stay in L1/L2; for each 16 weights loaded, MB rows of x are multiplied (MB <= 8
// accumulators: enough independent FMA chains to cover the FMA latency at M = 8).
//
// Each output element is one FMA chain over k (16 lanes), then the lanes are summed in a fixed
// order, whatever M or the thread count: a sequence decoded alone or in a batch gets
// bit-identical logits.
#include <omp.h>

#include <algorithm>

#include "kernels/kernels.h"
#include "kernels/simd.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace distill {
namespace {

constexpr int kRowBlock = 8;  // rows of x per pass over a weight row
// Weights per tile when several blocks of rows use them (9..16 rows): 32 KB stays in L1/L2
// between the blocks. llama-110m f32 B16 tg, 1 thread: 276-282 -> 299-308 tok/s (2 threads:
// 522-525 -> 546-553); 16-64 KB within a few % of each other; gpt2-mini (cache-resident) no change.
constexpr int kRowTileBytes = 32 << 10;

#if defined(__AVX512F__)

// out[m * ldo] = x[m] . w (+ bias) for m < MB; x rows with stride ldx; w one row of IC floats.
template <int MB>
inline void row_dots(float* out, int ldo, const float* x, int ldx, const float* w, float bias,
                     int IC) {
  __m512 acc[MB];
  for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_ps();
  int k = 0;
  for (; k + 16 <= IC; k += 16) {
    prefetch_weights<MB>(w + k);
    __m512 wv = _mm512_loadu_ps(w + k);
    // Keeps the weights in a register: GCC would otherwise fold a reload into every FMA.
    if constexpr (MB > 1) asm("" : "+v"(wv));
    for (int m = 0; m < MB; m++)
      acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + size_t(m) * ldx + k), wv, acc[m]);
  }
  if (k < IC) {
    const __mmask16 tail = __mmask16((1u << (IC - k)) - 1u);
    const __m512 wv = _mm512_maskz_loadu_ps(tail, w + k);
    for (int m = 0; m < MB; m++)
      acc[m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, x + size_t(m) * ldx + k), wv, acc[m]);
  }
  for (int m = 0; m < MB; m++) out[size_t(m) * ldo] = lane_sum(acc[m]) + bias;
}

#else

// Portable version with the same summation order (16 partial sums over k, then added up as
// lane_sum does).
template <int MB>
inline void row_dots(float* out, int ldo, const float* x, int ldx, const float* w, float bias,
                     int IC) {
  for (int m = 0; m < MB; m++) {
    float lane[16] = {};
    const float* xm = x + size_t(m) * ldx;
    for (int k = 0; k < IC; k++) lane[k % 16] += xm[k] * w[k];
    for (int width = 8; width >= 1; width /= 2)
      for (int i = 0; i < width; i++) lane[i] += lane[i + width];
    out[size_t(m) * ldo] = lane[0] + bias;
  }
}

#endif

template <int MB>
void rows_forward(float* out, const float* x, const float* weight, const float* bias, int IC,
                  int OC, int o_begin, int o_end) {
  for (int o = o_begin; o < o_end; o++)
    row_dots<MB>(out + o, OC, x, IC, weight + size_t(o) * IC, bias ? bias[o] : 0.0f, IC);
}

}  // namespace

void matmul_rows_forward(float* out, const float* inp, const float* weight, const float* bias,
                         int M, int IC, int OC) {
  // Contiguous output ranges, so each thread streams one part of the matrix.
  auto part = [&](int nt, int t) {
    const int o_begin = int(int64_t(OC) * t / nt), o_end = int(int64_t(OC) * (t + 1) / nt);
    // More than one block of rows: the weights go by in tiles that stay in L1/L2 while every
    // block uses them, so they come from memory (or L3) once per call, not once per block.
    const int tile = M > kRowBlock ? std::max(1, kRowTileBytes / int(sizeof(float) * IC)) : OC;
    for (int t0 = o_begin; t0 < o_end; t0 += tile) {
      const int t1 = std::min(o_end, t0 + tile);
      for (int m0 = 0; m0 < M; m0 += kRowBlock) {
        const float* x = inp + size_t(m0) * IC;
        float* o = out + size_t(m0) * OC;
        switch (std::min(kRowBlock, M - m0)) {
          case 1: rows_forward<1>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 2: rows_forward<2>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 3: rows_forward<3>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 4: rows_forward<4>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 5: rows_forward<5>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 6: rows_forward<6>(o, x, weight, bias, IC, OC, t0, t1); break;
          case 7: rows_forward<7>(o, x, weight, bias, IC, OC, t0, t1); break;
          default: rows_forward<8>(o, x, weight, bias, IC, OC, t0, t1); break;
        }
      }
    }
  };
  // Below ~64k weights (a 256 KB matrix) waking the second thread costs more than it saves.
  team_parts_if(size_t(OC) * IC >= 65536, part);
}

}  // namespace distill
