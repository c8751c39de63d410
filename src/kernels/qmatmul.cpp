// Low-precision weight storage and the matmul kernels over it (see qmatmul.h for the formats and
// the choice of kernel by row count).
//
// Decode kernels stream one weight row at a time, front to back, and apply it to up to 8 rows of x
// held in registers/L1, as matmul_rows.cpp does for f32 (the reasons are measured there). Per
// weight type and instruction set:
//   f16, bf16 (no BF16 unit), f32-accumulating: widen 16 (AVX-512) or 8 (AVX2) weights to f32
//     and FMA them into one accumulator per row: one chain over k, lanes summed at the end.
//   bf16 with AVX512-BF16: x is rounded to bf16 once per call and vdpbf16ps multiplies 32 pairs
//     per instruction into f32 lanes (half the instructions of the widening path).
//   q8_0: x is quantized to q8_0 per 32-block once per call (d = max|x| / 127, as llama.cpp
//     quantizes activations for its q8_0 dot). A 64-byte weight vector holds two blocks, and the
//     integer dot of each block lands in 8 int32 lanes, which are converted and multiplied by
//     that block's d_w * d_x into f32 accumulators. vpdpbusd / vpmaddubsw want an unsigned first
//     operand: with AVX512-VNNI x goes in as x + 128 and each dot starts from -128 * sum(w) (made
//     once per weight vector); without it (and on AVX2) the signs of w are moved onto x.
// The AVX2 paths keep 8-lane accumulators; the scalar paths mirror the math element by element.
#include "kernels/qmatmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "formats/dtype.h"
#include "kernels/simd.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace distill {

// ---- names ----

const char* weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::F32: return "f32";
    case WeightType::BF16: return "bf16";
    case WeightType::F16: return "f16";
    case WeightType::Q8_0: return "q8_0";
  }
  return "?";
}

WeightType parse_weight_type(const std::string& name) {
  for (WeightType t : {WeightType::F32, WeightType::BF16, WeightType::F16, WeightType::Q8_0})
    if (name == weight_type_name(t)) return t;
  throw Error("unknown weight type '{}' (expected f32, bf16, f16 or q8_0)", name);
}

double weight_type_bytes_per_weight(WeightType type) {
  switch (type) {
    case WeightType::F32: return 4.0;
    case WeightType::BF16:
    case WeightType::F16: return 2.0;
    case WeightType::Q8_0: return 1.0 + 4.0 / 32.0;
  }
  return 4.0;
}

// ---- instruction set ----

bool cpu_has(const char* feature) {
  const std::string f = feature;
  __builtin_cpu_init();
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512_bf16") return __builtin_cpu_supports("avx512bf16");
  if (f == "avx512_vnni") return __builtin_cpu_supports("avx512vnni");
  if (f == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (f == "f16c") return __builtin_cpu_supports("f16c");
  return false;
}

namespace {

KernelIsa best_isa() {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (cpu_has("avx512f") && cpu_has("avx512bw")) return KernelIsa::Avx512;
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (cpu_has("avx2") && cpu_has("f16c")) return KernelIsa::Avx2;
#endif
  return KernelIsa::Scalar;
}

std::atomic<KernelIsa> g_isa{KernelIsa::Auto};

}  // namespace

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::Auto: return "auto";
    case KernelIsa::Avx512: return "avx512";
    case KernelIsa::Avx2: return "avx2";
    case KernelIsa::Scalar: return "scalar";
  }
  return "?";
}

void set_kernel_isa(KernelIsa isa) {
  const KernelIsa best = best_isa();
  if (isa == KernelIsa::Auto || int(isa) < int(best)) isa = best;  // enum order: best first
  g_isa = isa;
}

KernelIsa kernel_isa() {
  KernelIsa isa = g_isa.load();
  if (isa == KernelIsa::Auto) {
    isa = best_isa();
    g_isa = isa;
  }
  return isa;
}

// ---- storage ----

QMatrix::QMatrix(const float* w, int rows, int cols, WeightType type)
    : type_(type), rows_(rows), cols_(cols), ld_(cols), source_(w) {
  if (rows <= 0 || cols <= 0) throw Error("QMatrix: empty matrix ({} x {})", rows, cols);
  if (type == WeightType::F32) {
    f32_ = w;
    return;
  }
  size_t bytes = 0;
  if (type == WeightType::Q8_0) {
    ld_ = (cols + 31) / 32 * 32;
    bytes = size_t(rows) * ld_ + size_t(rows) * (ld_ / 32) * sizeof(float);
  } else {
    bytes = size_t(rows) * cols * sizeof(uint16_t);
  }
  bytes = (bytes + 63) / 64 * 64 + 64;
  data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)));
  if (!data_) throw std::bad_alloc();
  std::memset(data_.get(), 0, bytes);
  uint16_t* h = reinterpret_cast<uint16_t*>(data_.get());
  int8_t* q = reinterpret_cast<int8_t*>(data_.get());
  float* d = nullptr;
  if (type == WeightType::Q8_0) {
    d = reinterpret_cast<float*>(data_.get() + (size_t(rows) * ld_ + 63) / 64 * 64);
    scales_ = d;
  }
#pragma omp parallel for schedule(static) if (size_t(rows) * cols >= 65536)
  for (int r = 0; r < rows; r++) {
    const float* src = w + size_t(r) * cols;
    if (type == WeightType::BF16) {
      for (int c = 0; c < cols; c++) h[size_t(r) * cols + c] = f32_to_bf16(src[c]);
    } else if (type == WeightType::F16) {
      for (int c = 0; c < cols; c++) h[size_t(r) * cols + c] = f32_to_f16(src[c]);
    } else {
      for (int b = 0; b < ld_ / 32; b++) {
        const int c0 = b * 32, c1 = std::min(cols, c0 + 32);
        float amax = 0.0f;
        for (int c = c0; c < c1; c++) amax = std::max(amax, std::fabs(src[c]));
        // As GGUF's q8_0: q from the f32 scale, the scale stored rounded to f16. So the same f32
        // matrix gets the bytes llama.cpp gives it, and a q8_0 tensor read from GGUF (q * d)
        // and quantized again gets its own bytes back (its amax / 127 is d exactly).
        const float scale = amax / 127.0f;
        d[size_t(r) * (ld_ / 32) + b] = f16_to_f32(f32_to_f16(scale));
        const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int c = c0; c < c1; c++) {
          const float v = std::round(src[c] * inv);  // ties away from zero, as ggml
          q[size_t(r) * ld_ + c] = int8_t(std::clamp(v, -127.0f, 127.0f));
        }
      }
    }
  }
}

size_t QMatrix::bytes() const {
  switch (type_) {
    case WeightType::F32: return size_t(rows_) * cols_ * sizeof(float);
    case WeightType::BF16:
    case WeightType::F16: return size_t(rows_) * cols_ * sizeof(uint16_t);
    case WeightType::Q8_0: return size_t(rows_) * ld_ + size_t(rows_) * (ld_ / 32) * sizeof(float);
  }
  return 0;
}

void QMatrix::dequantize_row(int r, float* out) const {
  DISTILL_CHECK(r >= 0 && r < rows_);
  switch (type_) {
    case WeightType::F32:
      std::memcpy(out, f32_ + size_t(r) * cols_, sizeof(float) * cols_);
      break;
    case WeightType::BF16:
      for (int c = 0; c < cols_; c++) out[c] = bf16_to_f32(u16()[size_t(r) * cols_ + c]);
      break;
    case WeightType::F16:
      for (int c = 0; c < cols_; c++) out[c] = f16_to_f32(u16()[size_t(r) * cols_ + c]);
      break;
    case WeightType::Q8_0:
      for (int c = 0; c < cols_; c++)
        out[c] = float(qs()[size_t(r) * ld_ + c]) * scales_[size_t(r) * (ld_ / 32) + c / 32];
      break;
  }
}

namespace {

// ---- x prepared once per call ----

// x (M, IC) quantized to q8_0 rows of ld int8 (zero padded) and per-block scales (M, ld / 32).
void quantize_rows_q8(int8_t* xq, float* xd, const float* x, int M, int IC, int ld) {
  for (int m = 0; m < M; m++)
    for (int b = 0; b < ld / 32; b++) {
      const float* src = x + size_t(m) * IC;
      const int c0 = b * 32, c1 = std::min(IC, c0 + 32);
      float amax = 0.0f;
      for (int c = c0; c < c1; c++) amax = std::max(amax, std::fabs(src[c]));
      const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
      xd[size_t(m) * (ld / 32) + b] = d;
      int8_t* q = xq + size_t(m) * ld;
      for (int c = c0; c < c0 + 32; c++)
        q[c] = c < c1 ? int8_t(std::clamp(std::nearbyint(src[c] * inv), -127.0f, 127.0f)) : 0;
    }
}

struct Prepared {
  std::vector<uint16_t> x16;  // bf16 x (M, IC) for the BF16-unit kernel
  std::vector<int8_t> xq;     // q8_0 x (M, ld)
  std::vector<float> xd;      // its scales (M, ld / 32)
  // The AVX-512 q8_0 kernel's copy of xq and xd, interleaved per block of 8 rows (see
  // interleave_q8_rows): xi (bytes, xq + 128 with VNNI) and xs (scales over their lanes).
  std::vector<uint8_t> xi;
  std::vector<float> xs;
};

// ---- scalar kernels (every type; also the reference the SIMD paths are tested against) ----

struct ScalarKernel {
  const QMatrix& w;
  const float* x;
  const Prepared& p;
  const float* bias;
  int IC, OC;
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const int ld = w.ld();
    for (int m = m0; m < m0 + MB; m++) {
      float acc = 0.0f;
      if (w.type() == WeightType::Q8_0) {
        const int8_t* wq = w.qs() + size_t(o) * ld;
        const int8_t* xq = p.xq.data() + size_t(m) * ld;
        for (int b = 0; b < ld / 32; b++) {
          int32_t dot = 0;
          for (int c = b * 32; c < b * 32 + 32; c++) dot += int32_t(wq[c]) * int32_t(xq[c]);
          acc += float(dot) * (w.scales()[size_t(o) * (ld / 32) + b] *
                               p.xd[size_t(m) * (ld / 32) + b]);
        }
      } else {
        const uint16_t* wh = w.u16() + size_t(o) * IC;
        const float* xm = x + size_t(m) * IC;
        for (int k = 0; k < IC; k++)
          acc += xm[k] * (w.type() == WeightType::BF16 ? bf16_to_f32(wh[k]) : f16_to_f32(wh[k]));
      }
      out[size_t(m) * OC + o] = acc + (bias ? bias[o] : 0.0f);
    }
  }
};

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

inline float lane_sum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// f16 / bf16 weights widened to f32, 8 lanes; the k % 8 tail is summed after the lanes.
struct Avx2WideningKernel {
  const QMatrix& w;
  const float* x;
  const float* bias;
  int IC, OC;
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const uint16_t* wh = w.u16() + size_t(o) * IC;
    const bool bf16 = w.type() == WeightType::BF16;
    __m256 acc[MB];
    for (int m = 0; m < MB; m++) acc[m] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= IC; k += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wh + k));
      __m256 wv = bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                       : _mm256_cvtph_ps(h);
      if constexpr (MB > 1) asm("" : "+x"(wv));
      for (int m = 0; m < MB; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + size_t(m0 + m) * IC + k), wv, acc[m]);
    }
    for (int m = 0; m < MB; m++) {
      float s = lane_sum8(acc[m]);
      const float* xm = x + size_t(m0 + m) * IC;
      for (int kk = k; kk < IC; kk++)
        s += xm[kk] * (bf16 ? bf16_to_f32(wh[kk]) : f16_to_f32(wh[kk]));
      out[size_t(m0 + m) * OC + o] = s + (bias ? bias[o] : 0.0f);
    }
  }
};

// q8_0 with vpmaddubsw: per 32-block, |w| (u8) x sign(x, w) (s8) -> 16 pair sums (int16: at most
// 2 * 127 * 127), -> 8 int32 with vpmaddwd against ones, scaled by d_w * d_x.
struct Avx2Q8Kernel {
  const QMatrix& w;
  const Prepared& p;
  const float* bias;
  int OC;
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const int ld = w.ld(), nb = ld / 32;
    const int8_t* wq = w.qs() + size_t(o) * ld;
    const float* wd = w.scales() + size_t(o) * nb;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MB];
    for (int m = 0; m < MB; m++) acc[m] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + b * 32));
      const __m256i aw = _mm256_abs_epi8(wv);
      for (int m = 0; m < MB; m++) {
        const int8_t* xq = p.xq.data() + size_t(m0 + m) * ld + b * 32;
        const __m256i sx =
            _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)), wv);
        const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
        const float scale = wd[b] * p.xd[size_t(m0 + m) * nb + b];
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale), acc[m]);
      }
    }
    for (int m = 0; m < MB; m++)
      out[size_t(m0 + m) * OC + o] = lane_sum8(acc[m]) + (bias ? bias[o] : 0.0f);
  }
};

#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)

// f16 / bf16 weights widened to f32, 16 lanes, masked tail (summation order as matmul_rows.cpp).
struct Avx512WideningKernel {
  const QMatrix& w;
  const float* x;
  const float* bias;
  int IC, OC;
  static __m512 widen(const uint16_t* h, bool bf16, __mmask16 mask) {
    const __m256i v = _mm256_maskz_loadu_epi16(mask, h);
    return bf16 ? _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, v), 16))
                : _mm512_maskz_cvtph_ps(0xffff, v);
  }
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const uint16_t* wh = w.u16() + size_t(o) * IC;
    const bool bf16 = w.type() == WeightType::BF16;
    __m512 acc[MB];
    for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= IC; k += 16) {
      if (k % 32 == 0) prefetch_weights<MB>(wh + k);
      __m512 wv = widen(wh + k, bf16, 0xffff);
      if constexpr (MB > 1) asm("" : "+v"(wv));
      for (int m = 0; m < MB; m++)
        acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + size_t(m0 + m) * IC + k), wv, acc[m]);
    }
    if (k < IC) {
      const __mmask16 tail = __mmask16((1u << (IC - k)) - 1u);
      const __m512 wv = widen(wh + k, bf16, tail);
      for (int m = 0; m < MB; m++)
        acc[m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, x + size_t(m0 + m) * IC + k), wv,
                                 acc[m]);
    }
    for (int m = 0; m < MB; m++)
      out[size_t(m0 + m) * OC + o] = lane_sum(acc[m]) + (bias ? bias[o] : 0.0f);
  }
};

#if defined(__AVX512BF16__)
// bf16 x bf16 pairs with vdpbf16ps: 32 products per instruction into 16 f32 lanes.
// Weight row o is w16 + (o - row0) * IC: the bf16 matrix itself (row0 0), or a tile of q8_0 rows
// widened to bf16 (q8_0 prompt processing).
struct Avx512Bf16DotKernel {
  const uint16_t* w16;
  int row0;
  const Prepared& p;
  const float* bias;
  int IC, OC;
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const uint16_t* wh = w16 + size_t(o - row0) * IC;
    const uint16_t* x16 = p.x16.data();
    // Two accumulators per row (even and odd 32-element steps): a row's chain of vdpbf16ps is
    // latency-bound at one row (6 cycles each); two chains halve that. Every MB uses the same
    // split, so results stay independent of the rows in the call.
    __m512 acc[MB], acc2[MB];
    for (int m = 0; m < MB; m++) acc[m] = acc2[m] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= IC; k += 64) {
      // At every row count here, 1 included: llama-bench bf16 B1 decode 1.5-2.1k -> 1.9-2.1k
      // tok/s over 6 alternating runs (llama-110m: 148-177 vs 155-168, within noise).
      prefetch_ahead(wh + k);
      prefetch_ahead(wh + k + 32);
      __m512i wv = _mm512_loadu_si512(wh + k), wv2 = _mm512_loadu_si512(wh + k + 32);
      if constexpr (MB > 1) asm("" : "+v"(wv), "+v"(wv2));
      for (int m = 0; m < MB; m++) {
        const uint16_t* xm = x16 + size_t(m0 + m) * IC + k;
        acc[m] = _mm512_dpbf16_ps(acc[m], __m512bh(_mm512_loadu_si512(xm)), __m512bh(wv));
        acc2[m] = _mm512_dpbf16_ps(acc2[m], __m512bh(_mm512_loadu_si512(xm + 32)), __m512bh(wv2));
      }
    }
    for (int m = 0; m < MB; m++) acc[m] = _mm512_add_ps(acc[m], acc2[m]);
    for (; k + 32 <= IC; k += 32) {
      __m512i wv = _mm512_loadu_si512(wh + k);
      if constexpr (MB > 1) asm("" : "+v"(wv));
      for (int m = 0; m < MB; m++)
        acc[m] = _mm512_dpbf16_ps(acc[m], __m512bh(_mm512_loadu_si512(x16 + size_t(m0 + m) * IC + k)),
                                  __m512bh(wv));
    }
    if (k < IC) {
      const __mmask32 tail = __mmask32((uint64_t(1) << (IC - k)) - 1u);
      const __m512i wv = _mm512_maskz_loadu_epi16(tail, wh + k);
      for (int m = 0; m < MB; m++)
        acc[m] = _mm512_dpbf16_ps(
            acc[m], __m512bh(_mm512_maskz_loadu_epi16(tail, x16 + size_t(m0 + m) * IC + k)),
            __m512bh(wv));
    }
    for (int m = 0; m < MB; m++)
      out[size_t(m0 + m) * OC + o] = lane_sum(acc[m]) + (bias ? bias[o] : 0.0f);
  }
  // Weight rows o and o + 1 against MB rows of x, 4 x rows at a time: each x vector loaded feeds
  // both weight rows (at 8 rows the one-row form loads 18 vectors per 16 vdpbf16ps; this one 12).
  // Every output is summed exactly as rows() sums it (the same two chains, the same tail and
  // lane order), so results do not depend on which form ran.
  template <int MB>
  void row_pair(float* out, int m0, int o) const {
    static_assert(MB % 4 == 0);
    for (int mb = 0; mb < MB; mb += 4) pair4(out, m0 + mb, o);
  }
  void pair4(float* out, int m0, int o) const {
    const uint16_t* w0 = w16 + size_t(o - row0) * IC;
    const uint16_t* w1 = w0 + IC;
    const uint16_t* x16 = p.x16.data() + size_t(m0) * IC;
    __m512 a0[4], b0[4], a1[4], b1[4];  // [row o / o+1][even / odd 32-step][x row]
    for (int m = 0; m < 4; m++) a0[m] = b0[m] = a1[m] = b1[m] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= IC; k += 64) {
      prefetch_ahead(w0 + k);
      prefetch_ahead(w0 + k + 32);
      prefetch_ahead(w1 + k);
      prefetch_ahead(w1 + k + 32);
      __m512i u0 = _mm512_loadu_si512(w0 + k), v0 = _mm512_loadu_si512(w0 + k + 32);
      __m512i u1 = _mm512_loadu_si512(w1 + k), v1 = _mm512_loadu_si512(w1 + k + 32);
      asm("" : "+v"(u0), "+v"(v0), "+v"(u1), "+v"(v1));
      for (int m = 0; m < 4; m++) {
        const __m512i x = _mm512_loadu_si512(x16 + size_t(m) * IC + k);
        const __m512i y = _mm512_loadu_si512(x16 + size_t(m) * IC + k + 32);
        a0[m] = _mm512_dpbf16_ps(a0[m], __m512bh(x), __m512bh(u0));
        a1[m] = _mm512_dpbf16_ps(a1[m], __m512bh(x), __m512bh(u1));
        b0[m] = _mm512_dpbf16_ps(b0[m], __m512bh(y), __m512bh(v0));
        b1[m] = _mm512_dpbf16_ps(b1[m], __m512bh(y), __m512bh(v1));
      }
    }
    for (int m = 0; m < 4; m++) a0[m] = _mm512_add_ps(a0[m], b0[m]), a1[m] = _mm512_add_ps(a1[m], b1[m]);
    for (; k + 32 <= IC; k += 32) {
      const __m512i u0 = _mm512_loadu_si512(w0 + k), u1 = _mm512_loadu_si512(w1 + k);
      for (int m = 0; m < 4; m++) {
        const __m512i x = _mm512_loadu_si512(x16 + size_t(m) * IC + k);
        a0[m] = _mm512_dpbf16_ps(a0[m], __m512bh(x), __m512bh(u0));
        a1[m] = _mm512_dpbf16_ps(a1[m], __m512bh(x), __m512bh(u1));
      }
    }
    if (k < IC) {
      const __mmask32 tail = __mmask32((uint64_t(1) << (IC - k)) - 1u);
      const __m512i u0 = _mm512_maskz_loadu_epi16(tail, w0 + k);
      const __m512i u1 = _mm512_maskz_loadu_epi16(tail, w1 + k);
      for (int m = 0; m < 4; m++) {
        const __m512i x = _mm512_maskz_loadu_epi16(tail, x16 + size_t(m) * IC + k);
        a0[m] = _mm512_dpbf16_ps(a0[m], __m512bh(x), __m512bh(u0));
        a1[m] = _mm512_dpbf16_ps(a1[m], __m512bh(x), __m512bh(u1));
      }
    }
    for (int m = 0; m < 4; m++) {
      out[size_t(m0 + m) * OC + o] = lane_sum(a0[m]) + (bias ? bias[o] : 0.0f);
      out[size_t(m0 + m) * OC + o + 1] = lane_sum(a1[m]) + (bias ? bias[o + 1] : 0.0f);
    }
  }
};

// q8_0 rows o0..o1 as bf16 (IC per row): q * d rounded to nearest even. The product has up to 18
// significant bits, so this adds a relative error of at most 2^-9 per weight, below q8_0's own
// step (d / 2 = max|w| / 254 per block).
void q8_rows_to_bf16(uint16_t* dst, const QMatrix& w, int o0, int o1) {
  const int IC = w.cols(), ld = w.ld(), nb = ld / 32;
  for (int o = o0; o < o1; o++) {
    const int8_t* q = w.qs() + size_t(o) * ld;
    const float* d = w.scales() + size_t(o) * nb;
    uint16_t* row = dst + size_t(o - o0) * IC;
    for (int c = 0; c < IC; c += 16) {  // q is zero-padded to ld: 16 bytes are always there
      // All-ones masked forms: GCC 12 warns (-Wmaybe-uninitialized) on the unmasked ones'
      // "undefined" pass-through register once this is inlined into an OpenMP region.
      const __m512 v = _mm512_mul_ps(
          _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepi8_epi32(
                                               0xffff, _mm_loadu_si128(
                                                           reinterpret_cast<const __m128i*>(q + c)))),
          _mm512_set1_ps(d[c / 32]));
      const __mmask16 mask = IC - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (IC - c)) - 1u);
      _mm256_mask_storeu_epi16(row + c, mask, __m256i(_mm512_cvtneps_pbh(v)));
    }
  }
}
#endif

// p.xi / p.xs from p.xq / p.xd (M rows of ld bytes, ld / 32 scales) for Avx512Q8Kernel: rows in
// blocks of R = 8 rows (the last block: the 1..8 rows left), and within a block, for each pair
// of 32-blocks, the block's R rows one after the other: 64 bytes each (an odd last 32-block
// padded with zeros) and 16 scales (lanes 0-7 the first block's, 8-15 the second's, 0 for
// padding). With VNNI the bytes are xq + 128 (xq ^ 0x80), the unsigned operand of vpdpbusd.
void interleave_q8_rows(Prepared& p, int M, int ld) {
  const int nb = ld / 32, pairs = (nb + 1) / 2;
#if defined(__AVX512VNNI__)
  constexpr uint8_t flip = 0x80;
#else
  constexpr uint8_t flip = 0;
#endif
  p.xi.resize(size_t(M) * 64 * pairs);
  p.xs.resize(size_t(M) * 16 * pairs);
  for (int m = 0; m < M; m++) {
    const int m0 = m / 8 * 8, R = std::min(8, M - m0), r = m - m0;
    const int8_t* q = p.xq.data() + size_t(m) * ld;
    const float* d = p.xd.data() + size_t(m) * nb;
    for (int pr = 0; pr < pairs; pr++) {
      const size_t slot = size_t(m0) * pairs + size_t(pr) * R + r;
      uint8_t* xi = p.xi.data() + slot * 64;
      float* xs = p.xs.data() + slot * 16;
      const int bytes = std::min(64, ld - pr * 64);
      for (int i = 0; i < bytes; i++) xi[i] = uint8_t(q[pr * 64 + i]) ^ flip;
      for (int i = bytes; i < 64; i++) xi[i] = flip;
      for (int l = 0; l < 16; l++) {
        const int blk = 2 * pr + l / 8;
        xs[l] = blk < nb ? d[blk] : 0.0f;
      }
    }
  }
}

// q8_0: two 32-blocks per 64-byte vector. Integer dot per 4 bytes into 16 int32 lanes (lanes
// 0-7: the first block, 8-15: the second), converted and scaled per block.
struct Avx512Q8Kernel {
  const QMatrix& w;
  const Prepared& p;
  const float* bias;
  int OC;
  // Without VNNI: u8 x s8 pair sums (|w| <= 127, so no int16 saturation), then pairs of those.
  static __m512i dot4(__m512i aw, __m512i sx) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
  }
  // Lanes 0-7 = s[0], lanes 8-15 = s[1] (one block's scale per half).
  static __m512 pair(const float* s, bool two) {
    return _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s[0]), _mm512_set1_ps(two ? s[1] : 0.0f));
  }
  template <int MB>
  void rows(float* out, int m0, int o) const {
    const int ld = w.ld(), nb = ld / 32;
    const int8_t* wq = w.qs() + size_t(o) * ld;
    const float* wd = w.scales() + size_t(o) * nb;
    // This block's x: per pair of 32-blocks, MB rows of 64 bytes and of 16 scales, so every row's
    // operand is at a fixed offset from one pointer (with a pointer per row GCC 12 ran out of
    // general registers and reloaded the row pointers from the stack every 64 weights).
    const int pairs = (nb + 1) / 2;
    const uint8_t* xi = p.xi.data() + size_t(m0) * 64 * pairs;
    const float* xs = p.xs.data() + size_t(m0) * 16 * pairs;
    __m512 acc[MB];
    for (int m = 0; m < MB; m++) acc[m] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 2, xi += 64 * MB, xs += 16 * MB) {
      const bool two = b + 1 < nb;
      const __mmask64 mask = two ? ~__mmask64(0) : __mmask64(0xffffffffu);
      const __m512i wv = _mm512_maskz_loadu_epi8(mask, wq + b * 32);
      const __m512 dw = pair(wd + b, two);
#if defined(__AVX512VNNI__)
      // (x + 128) . w - 128 * sum(w) per 4 bytes: x + 128 is the unsigned operand vpdpbusd takes,
      // and the correction, made once per weight vector, is where each row's dot starts. The
      // same int32 sums as |w| . sign(x, w) below, without a sign fix per row.
      const __m512i zero = _mm512_setzero_si512();
      const __m512i start =
          _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(char(0x80)), wv));
      for (int m = 0; m < MB; m++) {
        const __m512i dot = _mm512_dpbusd_epi32(start, _mm512_loadu_si512(xi + 64 * m), wv);
        const __m512 dx = _mm512_loadu_ps(xs + 16 * m);
        // The masked form: GCC 12's plain one starts from an undefined register (-Wuninitialized).
        acc[m] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xffff, dot), _mm512_mul_ps(dw, dx),
                                 acc[m]);
      }
#else
      const __m512i aw = _mm512_abs_epi8(wv);
      const __mmask64 neg = _mm512_movepi8_mask(wv);
      for (int m = 0; m < MB; m++) {
        const __m512i xv = _mm512_loadu_si512(xi + 64 * m);
        const __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
        const __m512 dx = _mm512_loadu_ps(xs + 16 * m);
        acc[m] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xffff, dot4(aw, sx)),
                                 _mm512_mul_ps(dw, dx), acc[m]);
      }
#endif
    }
    for (int m = 0; m < MB; m++)
      out[size_t(m0 + m) * OC + o] = lane_sum(acc[m]) + (bias ? bias[o] : 0.0f);
  }
};

#endif

// Tiles of weight rows: at M > 8 the x rows come in blocks of 8, and each block re-reads the tile
// from L2 instead of memory (64 rows of 4096 bf16 = 512 KB at most).
constexpr int kTileRows = 64;
constexpr int kRowBlock = 8;

template <class K, int MB, class = void>
struct HasRowPair : std::false_type {};
template <class K, int MB>
struct HasRowPair<K, MB, std::void_t<decltype(std::declval<const K&>().template row_pair<MB>(
                              nullptr, 0, 0))>> : std::true_type {};

// Weight rows o0..o1 against x rows m0..m0+MB: two weight rows at a time where the kernel has a
// row_pair form (the same sums as rows()).
template <int MB, class Kernel>
void run_block(const Kernel& kernel, float* out, int m0, int o0, int o1) {
  int o = o0;
  if constexpr (HasRowPair<Kernel, MB>::value)
    for (; o + 2 <= o1; o += 2) kernel.template row_pair<MB>(out, m0, o);
  for (; o < o1; o++) kernel.template rows<MB>(out, m0, o);
}

// Runs kernel.rows<MB>(out, m0, o) over all (row block, weight row), where kernel =
// tile_kernel(o0, o1) is made per tile of weight rows [o0, o1): each thread owns a contiguous
// range of weight rows (its own stream through the matrix).
template <class TileKernel>
void run_tiles(const TileKernel& tile_kernel, float* out, int M, const QMatrix& w) {
  const int OC = w.rows();
  auto part = [&](int nt, int t) {
    const int o_begin = int(int64_t(OC) * t / nt), o_end = int(int64_t(OC) * (t + 1) / nt);
    for (int o0 = o_begin; o0 < o_end; o0 += kTileRows) {
      const int o1 = std::min(o_end, o0 + kTileRows);
      const auto kernel = tile_kernel(o0, o1);
      for (int m0 = 0; m0 < M; m0 += kRowBlock) {
        switch (std::min(kRowBlock, M - m0)) {
#define DISTILL_ROWS(MB) \
  case MB:               \
    for (int o = o0; o < o1; o++) kernel.template rows<MB>(out, m0, o); \
    break;
          DISTILL_ROWS(1)
          DISTILL_ROWS(2)
          DISTILL_ROWS(3)
          case 4: run_block<4>(kernel, out, m0, o0, o1); break;
          DISTILL_ROWS(5)
          DISTILL_ROWS(6)
          DISTILL_ROWS(7)
          default: run_block<8>(kernel, out, m0, o0, o1); break;
#undef DISTILL_ROWS
        }
      }
    }
  };
  team_parts_if(size_t(OC) * w.cols() >= 65536, part);
}

template <class Kernel>
void run_rows(const Kernel& kernel, float* out, int M, const QMatrix& w) {
  run_tiles([&kernel](int, int) -> const Kernel& { return kernel; }, out, M, w);
}

}  // namespace

void qmatmul_forward(float* out, const float* inp, const QMatrix& w, const float* bias, int M) {
  const int IC = w.cols(), OC = w.rows();
  if (M <= 0) return;
  if (w.type() == WeightType::F32) {
    matmul_forward(out, inp, w.f32(), bias, M, IC, OC);
    return;
  }
  const KernelIsa isa = kernel_isa();
  // Asked once: this runs for every linear layer of every decode step.
  static const bool bf16_unit = cpu_has("avx512_bf16");
  // Prompt processing in bf16: oneDNN's bf16 GEMM on the stored weights. q8_0 takes the same
  // GEMM on its weights widened to bf16 for this call (into a per-thread scratch of the largest
  // matrix's size): the widening pass costs about what a few rows of x do, and the GEMM then runs
  // at bf16 speed. Against the earlier tiles of 64 widened rows through the row kernels, prompt
  // processing went 7.9k -> 11.3-12.3k tok/s (llama-bench, 128 tokens) and 1.0k -> 1.7k
  // (llama-110m), and 8.5k -> 16-17k / 1.0k -> 2.3-2.4k at batch 8 (2 threads, Zen 5).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
  constexpr bool q8_widens = true;
#else
  constexpr bool q8_widens = false;
#endif
  if ((w.type() == WeightType::BF16 || (q8_widens && w.type() == WeightType::Q8_0)) &&
      M > kMatmulRowsMax && isa == KernelIsa::Avx512 && bf16_unit) {
    const uint16_t* w16 = w.type() == WeightType::BF16 ? w.u16() : nullptr;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
    if (!w16) {
      thread_local std::vector<uint16_t> widened;
      widened.resize(size_t(OC) * IC);
      uint16_t* dst = widened.data();  // this thread's buffer: the workers' thread_local is theirs
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
      for (int o0 = 0; o0 < OC; o0 += 16)
        q8_rows_to_bf16(dst + size_t(o0) * IC, w, o0, std::min(OC, o0 + 16));
      w16 = dst;
    }
#endif
    gemm_bf16_weights(out, inp, w16, M, IC, OC);
    if (bias) {
      parallel_for_if(M, size_t(M) * OC > kParallelMin, [&](int m) {
        for (int o = 0; o < OC; o++) out[size_t(m) * OC + o] += bias[o];
      });
    }
    return;
  }
  thread_local Prepared p;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
  auto x_to_bf16 = [&]() {
    p.x16.resize(size_t(M) * IC + 16);
    size_t i = 0;  // round to nearest even, 16 at a time (NaN aside, as f32_to_bf16)
    for (; i + 16 <= size_t(M) * IC; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p.x16.data() + i),
                          __m256i(_mm512_cvtneps_pbh(_mm512_loadu_ps(inp + i))));
    for (; i < size_t(M) * IC; i++) p.x16[i] = f32_to_bf16(inp[i]);
  };
#endif
  if (w.type() == WeightType::Q8_0) {
    p.xq.resize(size_t(M) * w.ld());
    p.xd.resize(size_t(M) * (w.ld() / 32));
    quantize_rows_q8(p.xq.data(), p.xd.data(), inp, M, IC, w.ld());
  }
  switch (isa) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    case KernelIsa::Avx512:
      if (w.type() == WeightType::Q8_0) {
        interleave_q8_rows(p, M, w.ld());
        run_rows(Avx512Q8Kernel{w, p, bias, OC}, out, M, w);
        return;
      }
#if defined(__AVX512BF16__)
      if (w.type() == WeightType::BF16 && bf16_unit) {
        x_to_bf16();
        run_rows(Avx512Bf16DotKernel{w.u16(), 0, p, bias, IC, OC}, out, M, w);
        return;
      }
#endif
      run_rows(Avx512WideningKernel{w, inp, bias, IC, OC}, out, M, w);
      return;
#endif
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    case KernelIsa::Avx2:
      if (w.type() == WeightType::Q8_0)
        run_rows(Avx2Q8Kernel{w, p, bias, OC}, out, M, w);
      else
        run_rows(Avx2WideningKernel{w, inp, bias, IC, OC}, out, M, w);
      return;
#endif
    default:
      run_rows(ScalarKernel{w, inp, p, bias, IC, OC}, out, M, w);
      return;
  }
}

}  // namespace distill
