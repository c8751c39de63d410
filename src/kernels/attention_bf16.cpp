// Causal attention at MatmulPrecision::BF16 with AVX512-BF16 dot products, one head at a time
// and without oneDNN: for T = 256, HD = 64 the block products of attention.cpp are 4.6k oneDNN
// calls per step of gpt2-bench, each as long in call overhead as in arithmetic, plus a bf16
// copy of both operands per call. Here each head's operands are rounded to bf16 once, into the
// layouts a register-tiled kernel reads directly, and every product skips what causality zeroes.
//
// The kernel (tile below) computes C (R rows, up to 64 columns) = alpha * A @ B (+ C) with
// vdpbf16ps: B in "pair" layout (element (k, n) at B[(k/2) * ldb + 2n + k%2], so one 512-bit
// load holds 16 columns x 2 k), A read as 32-bit pairs (A[m][k], A[m][k+1]) broadcast to all
// lanes. A's pair (m, p) is at A32[m * a_ms + p * a_ps], which covers both a row-major bf16
// matrix (a_ms = row pairs, a_ps = 1) and a pair-layout one read transposed (a_ms = 1,
// a_ps = row length): P^T and dS^T come from the same bytes as P and dS, with no transpose.
//
// Per head (q, k, v (T,HD)): S = scale * Q K^T, P = softmax(S) in fp32 (stored in att, as the
// fp32 path), O = P V. Backward: dP = dO V^T, dS = P * (dP - rowsum(dP * P)) in fp32,
// dQ += scale * dS K, dK += scale * dS^T Q, dV += P^T dO. Inputs are rounded to bf16 as the
// oneDNN path rounds them (round-to-nearest-even), accumulation is fp32.
#include "kernels/attention_bf16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "formats/dtype.h"
#include "kernels/qmatmul.h"
#include "kernels/vecmath.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define DISTILL_ATTENTION_BF16 1
#endif

namespace distill {

void softmax_causal_row(float* row, int i, int T) {
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

void softmax_causal_row_backward(float* drow, const float* arow, int i, int T) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int j = 0; j <= i; j++) dot += drow[j] * arow[j];
#pragma omp simd
  for (int j = 0; j <= i; j++) drow[j] = arow[j] * (drow[j] - dot);
  std::memset(drow + i + 1, 0, sizeof(float) * (T - i - 1));
}

#if DISTILL_ATTENTION_BF16
namespace {

int round_up(int x, int m) { return (x + m - 1) / m * m; }

// dst (rows, ld_dst) = bf16(src (rows, cols; row stride ld)), columns cols..ld_dst zero.
void pack_rows(uint16_t* dst, int ld_dst, const float* src, int rows, int cols, int ld) {
  for (int r = 0; r < rows; r++) {
    const float* s = src + size_t(r) * ld;
    uint16_t* d = dst + size_t(r) * ld_dst;
    int c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + c + 16), _mm512_loadu_ps(s + c));
      _mm512_storeu_si512(d + c, __m512i(v));
    }
    for (; c < cols; c++) d[c] = f32_to_bf16(s[c]);
    for (; c < ld_dst; c++) d[c] = 0;
  }
}

// Pair layout of src (rows, cols; row stride ld) as the B operand B(k = row, n = col):
// dst[(r/2) * 2 * ncols + 2c + r%2] = bf16(src[r][c]) for ncols >= cols (a multiple of 16);
// padding rows (rows odd) and columns are zero.
void pack_pairs(uint16_t* dst, int ncols, const float* src, int rows, int cols, int ld) {
  // Lane order of _mm512_cvtne2ps_pbh(odd, even) is even[0..15], odd[0..15]; interleave.
  const __m512i interleave = _mm512_set_epi16(
      31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
      19, 3, 18, 2, 17, 1, 16, 0);
  for (int r = 0; r < rows; r += 2) {
    const float* even = src + size_t(r) * ld;
    const float* odd = r + 1 < rows ? even + ld : nullptr;
    uint16_t* d = dst + size_t(r / 2) * 2 * ncols;
    int c = 0;
    for (; c + 16 <= cols; c += 16) {
      const __m512 e = _mm512_loadu_ps(even + c);
      const __m512 o = odd ? _mm512_loadu_ps(odd + c) : _mm512_setzero_ps();
      const __m512i v = __m512i(_mm512_cvtne2ps_pbh(o, e));
      _mm512_storeu_si512(d + 2 * c, _mm512_permutexvar_epi16(interleave, v));
    }
    for (; c < cols; c++) {
      d[2 * c] = f32_to_bf16(even[c]);
      d[2 * c + 1] = odd ? f32_to_bf16(odd[c]) : 0;
    }
    std::memset(d + 2 * cols, 0, sizeof(uint16_t) * 2 * (ncols - cols));
  }
}

// Pair layout of the transpose of a row-major bf16 matrix src (rows, kpairs * 2): B(k, n) =
// src[n][k], so B's pair (p, n) is src's 32-bit word (n, p). dst has ncols >= rows columns.
void pack_transposed_pairs(uint32_t* dst, int ncols, const uint16_t* src, int rows, int kpairs) {
  const uint32_t* s = reinterpret_cast<const uint32_t*>(src);
  for (int p = 0; p < kpairs; p++) {
    uint32_t* d = dst + size_t(p) * ncols;
    for (int n = 0; n < rows; n++) d[n] = s[size_t(n) * kpairs + p];
    for (int n = rows; n < ncols; n++) d[n] = 0;
  }
}

// C (R rows, NZ * 16 columns from column n; row stride ldc; columns >= ccols not written)
//   = alpha * sum over pairs p in [p0, p1) of A pair (m, p) . B pairs (p, n..) (+ C).
template <int R, int NZ>
void tile(float* C, size_t ldc, int n, int ccols, const uint32_t* A, size_t a_ms, size_t a_ps,
          const uint16_t* B, size_t ldb, int p0, int p1, float alpha, bool accumulate) {
  __m512 acc[R][NZ];
  for (int r = 0; r < R; r++)
    for (int z = 0; z < NZ; z++) acc[r][z] = _mm512_setzero_ps();
  for (int p = p0; p < p1; p++) {
    const uint16_t* bp = B + size_t(p) * ldb + 2 * size_t(n);
    __m512bh b[NZ];
    for (int z = 0; z < NZ; z++) b[z] = __m512bh(_mm512_loadu_si512(bp + 32 * z));
    for (int r = 0; r < R; r++) {
      const __m512bh a = __m512bh(_mm512_set1_epi32(int(A[r * a_ms + p * a_ps])));
      for (int z = 0; z < NZ; z++) acc[r][z] = _mm512_dpbf16_ps(acc[r][z], a, b[z]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
  for (int r = 0; r < R; r++)
    for (int z = 0; z < NZ; z++) {
      const int col = n + 16 * z, count = std::min(16, ccols - col);
      if (count <= 0) continue;
      const __mmask16 mask = __mmask16((1u << count) - 1u);
      float* c = C + r * ldc + col;
      __m512 v = _mm512_mul_ps(acc[r][z], va);
      if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, c));
      _mm512_mask_storeu_ps(c, mask, v);
    }
}

template <int R>
void tile_r(int nz, float* C, size_t ldc, int n, int ccols, const uint32_t* A, size_t a_ms,
            size_t a_ps, const uint16_t* B, size_t ldb, int p0, int p1, float alpha, bool acc) {
  switch (nz) {
    case 1: return tile<R, 1>(C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc);
    case 2: return tile<R, 2>(C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc);
    case 3: return tile<R, 3>(C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc);
    default: return tile<R, 4>(C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc);
  }
}

// Rows [m, m + R) of C, columns [0, ncols) in strips of 64; the pair range may depend on the
// strip (pairs(n0) -> {p0, p1}).
template <typename Pairs>
void rows_tile(int R, float* C, size_t ldc, int ncols, int ccols, const uint32_t* A, size_t a_ms,
               size_t a_ps, const uint16_t* B, size_t ldb, Pairs pairs, float alpha, bool acc) {
  for (int n = 0; n < ncols; n += 64) {
    const int nz = std::min(4, (ncols - n + 15) / 16);
    const auto [p0, p1] = pairs(n);
    if (p0 >= p1) {
      // An empty sum: C = 0 * alpha (+ C).
      if (!acc)
        for (int r = 0; r < R; r++)
          std::memset(C + r * ldc + n, 0, sizeof(float) * std::max(0, std::min(64, ccols - n)));
      continue;
    }
    switch (R) {
      case 1: tile_r<1>(nz, C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc); break;
      case 2: tile_r<2>(nz, C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc); break;
      case 3: tile_r<3>(nz, C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc); break;
      default: tile_r<4>(nz, C, ldc, n, ccols, A, a_ms, a_ps, B, ldb, p0, p1, alpha, acc); break;
    }
  }
}

constexpr int kRows = 4;  // rows of C per tile

// Per-thread packing buffers, sized for the largest head seen.
struct Scratch {
  std::vector<uint16_t> a, b, c, d;
  static uint16_t* get(std::vector<uint16_t>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

const uint32_t* u32(const uint16_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// One head's sizes: T and HD rounded up to even (pairs) and to 16 (a pair-layout row).
struct HeadDims {
  int T, HD, HDp, Tp, Tn, HDn;
  size_t head, square;
  float scale;
  HeadDims(int T_, int HD_)
      : T(T_), HD(HD_), HDp(round_up(HD_, 2)), Tp(round_up(T_, 2)), Tn(round_up(T_, 16)),
        HDn(round_up(HD_, 16)), head(size_t(T_) * HD_), square(size_t(T_) * T_),
        scale(1.0f / std::sqrt(float(HD_))) {}
};

}  // namespace

bool attention_bf16_available() {
  static const bool has = cpu_has("avx512_bf16") && cpu_has("avx512f") && cpu_has("avx512bw");
  return has && kernel_isa() == KernelIsa::Avx512;
}

bool attention_forward_bf16(float* out, float* att, const float* q, const float* k,
                            const float* v, int B, int T, int NH, int NKV, int HD) {
  if (!attention_bf16_available()) return false;
  const int group = NH / NKV;
  const HeadDims d(T, HD);
  const int HDp = d.HDp, Tp = d.Tp, Tn = d.Tn, HDn = d.HDn;
  const size_t head = d.head, square = d.square;
  const float scale = d.scale;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    const int b = bh / NH, h = bh % NH;
    Scratch& s = scratch();
    uint16_t* q16 = Scratch::get(s.a, size_t(T) * HDp);             // Q rows
    uint16_t* k16 = Scratch::get(s.b, size_t(T) * HDp);             // K rows
    uint16_t* kT = Scratch::get(s.c, size_t(HDp / 2) * 2 * Tn);     // B(d, j) = K[j][d]
    uint16_t* vp = Scratch::get(s.d, size_t(Tp / 2) * 2 * HDn + size_t(T) * Tp);  // V pairs, P
    uint16_t* p16 = vp + size_t(Tp / 2) * 2 * HDn;                  // P rows
    const float* kh = k + (size_t(b) * NKV + h / group) * head;
    const float* vh = v + (size_t(b) * NKV + h / group) * head;
    pack_rows(q16, HDp, q + size_t(bh) * head, T, HD, HD);
    pack_rows(k16, HDp, kh, T, HD, HD);
    pack_transposed_pairs(reinterpret_cast<uint32_t*>(kT), Tn, k16, T, HDp / 2);
    pack_pairs(vp, HDn, vh, T, HD, HD);
    float* a = att + size_t(bh) * square;
    float* o = out + size_t(bh) * head;
    for (int i0 = 0; i0 < T; i0 += kRows) {
      const int R = std::min(kRows, T - i0), visible = i0 + R;
      // S rows i0.. over the keys they see, softmax, then their P rows in bf16.
      rows_tile(R, a + size_t(i0) * T, T, visible, T, u32(q16) + size_t(i0) * (HDp / 2),
                HDp / 2, 1, kT, 2 * size_t(Tn), [&](int) { return std::pair{0, HDp / 2}; },
                scale, false);
      for (int i = i0; i < i0 + R; i++) softmax_causal_row(a + size_t(i) * T, i, T);
      pack_rows(p16 + size_t(i0) * Tp, Tp, a + size_t(i0) * T, R, T, T);
      // O rows i0.. = P rows @ V, over the keys they see.
      const int pairs = (visible + 1) / 2;
      rows_tile(R, o + size_t(i0) * HD, HD, HD, HD, u32(p16) + size_t(i0) * (Tp / 2), Tp / 2, 1,
                vp, 2 * size_t(HDn), [&](int) { return std::pair{0, pairs}; }, 1.0f, false);
    }
  }
  return true;
}

bool attention_backward_bf16(float* dq, float* dk, float* dv, float* datt, const float* dout,
                             const float* att, const float* q, const float* k, const float* v,
                             int B, int T, int NH, int NKV, int HD) {
  if (!attention_bf16_available()) return false;
  const int group = NH / NKV;
  const HeadDims d(T, HD);
  const int HDp = d.HDp, Tp = d.Tp, Tn = d.Tn, HDn = d.HDn;
  const size_t head = d.head, square = d.square;
  const float scale = d.scale;
  const size_t pair_rows_T = size_t(Tp / 2) * 2 * HDn;  // a (T, HD) matrix in pair layout
  const size_t pair_sq = size_t(Tp / 2) * 2 * Tn;       // a (T, T) matrix in pair layout
  // One task per kv head: its query heads accumulate into the same dk, dv, in order.
#pragma omp parallel for schedule(static)
  for (int bkv = 0; bkv < B * NKV; bkv++) {
    const int b = bkv / NKV, kvh = bkv % NKV;
    Scratch& s = scratch();
    // Per kv head: V^T pairs (dP = dO V^T) and K pairs (dQ = dS K).
    uint16_t* kvbuf = Scratch::get(s.a, size_t(T) * HDp + size_t(HDp / 2) * 2 * Tn + pair_rows_T);
    uint16_t* v16 = kvbuf;                                    // V rows
    uint16_t* vT = v16 + size_t(T) * HDp;                     // B(d, j) = V[j][d]
    uint16_t* kp = vT + size_t(HDp / 2) * 2 * Tn;             // K pairs, B(j, d)
    // Per query head: dO rows, dO pairs, Q pairs, dS rows, dS pairs, P pairs.
    uint16_t* hbuf = Scratch::get(s.b, size_t(T) * HDp + 2 * pair_rows_T + size_t(T) * Tp +
                                           2 * pair_sq);
    uint16_t* do16 = hbuf;
    uint16_t* dop = do16 + size_t(T) * HDp;
    uint16_t* qp = dop + pair_rows_T;
    uint16_t* ds16 = qp + pair_rows_T;
    uint16_t* dsp = ds16 + size_t(T) * Tp;
    uint16_t* pp = dsp + pair_sq;
    const float* kh = k + size_t(bkv) * head;
    const float* vh = v + size_t(bkv) * head;
    pack_rows(v16, HDp, vh, T, HD, HD);
    pack_transposed_pairs(reinterpret_cast<uint32_t*>(vT), Tn, v16, T, HDp / 2);
    pack_pairs(kp, HDn, kh, T, HD, HD);
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
      const size_t bh = size_t(b) * NH + h;
      const float* a = att + bh * square;
      float* da = datt + bh * square;
      const float* dout_h = dout + bh * head;
      pack_rows(do16, HDp, dout_h, T, HD, HD);
      // dP rows = dO rows @ V^T over the visible keys; then dS in place (fp32) and in bf16.
      for (int i0 = 0; i0 < T; i0 += kRows) {
        const int R = std::min(kRows, T - i0);
        rows_tile(R, da + size_t(i0) * T, T, i0 + R, T, u32(do16) + size_t(i0) * (HDp / 2),
                  HDp / 2, 1, vT, 2 * size_t(Tn), [&](int) { return std::pair{0, HDp / 2}; },
                  1.0f, false);
        for (int i = i0; i < i0 + R; i++)
          softmax_causal_row_backward(da + size_t(i) * T, a + size_t(i) * T, i, T);
      }
      if (dq) {
        pack_rows(ds16, Tp, da, T, T, T);
        for (int i0 = 0; i0 < T; i0 += kRows) {
          const int R = std::min(kRows, T - i0), pairs = (i0 + R + 1) / 2;
          rows_tile(R, dq + bh * head + size_t(i0) * HD, HD, HD, HD,
                    u32(ds16) + size_t(i0) * (Tp / 2), Tp / 2, 1, kp, 2 * size_t(HDn),
                    [&](int) { return std::pair{0, pairs}; }, scale, true);
        }
      }
      // dK rows j = dS^T rows @ Q and dV rows j = P^T rows @ dO, over the queries i >= j: A is
      // dS (or P) in pair layout read transposed (pair (j, i/2) at word (i/2) * Tn + j).
      if (dk) {
        pack_pairs(dsp, Tn, da, T, T, T);
        pack_pairs(qp, HDn, q + bh * head, T, HD, HD);
        for (int j0 = 0; j0 < T; j0 += kRows) {
          const int R = std::min(kRows, T - j0);
          rows_tile(R, dk + size_t(bkv) * head + size_t(j0) * HD, HD, HD, HD, u32(dsp) + j0, 1,
                    Tn, qp, 2 * size_t(HDn), [&](int) { return std::pair{j0 / 2, Tp / 2}; },
                    scale, true);
        }
      }
      if (dv) {
        pack_pairs(pp, Tn, a, T, T, T);
        pack_pairs(dop, HDn, dout_h, T, HD, HD);
        for (int j0 = 0; j0 < T; j0 += kRows) {
          const int R = std::min(kRows, T - j0);
          rows_tile(R, dv + size_t(bkv) * head + size_t(j0) * HD, HD, HD, HD, u32(pp) + j0, 1,
                    Tn, dop, 2 * size_t(HDn), [&](int) { return std::pair{j0 / 2, Tp / 2}; },
                    1.0f, true);
        }
      }
    }
  }
  return true;
}

#else

bool attention_bf16_available() { return false; }

bool attention_forward_bf16(float*, float*, const float*, const float*, const float*, int, int,
                            int, int, int) {
  return false;
}

bool attention_backward_bf16(float*, float*, float*, float*, const float*, const float*,
                             const float*, const float*, const float*, int, int, int, int, int) {
  return false;
}

#endif

}  // namespace distill
