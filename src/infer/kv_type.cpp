#include "infer/kv_type.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

#if defined(__AVX512F__) || defined(__F16C__)
// GCC 12 warns that the _mm*_undefined_* placeholders inside the conversion intrinsics "may be
// used uninitialized" (a false positive: they are don't-care inputs of unmasked instructions).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace distill {

KvType parse_kv_type(const std::string& name) {
  if (name == "f32") return KvType::F32;
  if (name == "bf16") return KvType::BF16;
  if (name == "f16") return KvType::F16;
  throw Error("unknown KV cache type '{}': expected f32, bf16 or f16", name);
}

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::F32: return "f32";
    case KvType::BF16: return "bf16";
    case KvType::F16: return "f16";
  }
  return "?";
}

size_t kv_type_bytes(KvType type) { return type == KvType::F32 ? 4 : 2; }

bool kv_simd_available(KvType type) {
#if defined(__AVX512F__)
  (void)type;
  return true;
#else
  (void)type;
  return false;
#endif
}

namespace {

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Round to nearest even, as VCVTNEPS2BF16 does: NaN stays a (quiet) NaN, and f32 subnormal
// inputs become zero (the instruction treats them as zero; they are below 1.2e-38).
uint16_t bf16_from_float(float f) {
  uint32_t b = bits_of(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40);
  if ((b & 0x7f800000u) == 0) return uint16_t((b >> 16) & 0x8000);
  b += 0x7fffu + ((b >> 16) & 1);
  return uint16_t(b >> 16);
}
float float_from_bf16(uint16_t h) { return float_of(uint32_t(h) << 16); }

// IEEE binary16, round to nearest even (what VCVTPS2PH does with _MM_FROUND_TO_NEAREST_INT),
// subnormal halves included; too large for f16 (>= 65520 after rounding) becomes infinity.
uint16_t f16_from_float(float f) {
  const uint32_t x = bits_of(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (ax >= 0x477ff000u) return sign | 0x7c00;
  if (ax < 0x38800000u) {
    // Below 2^-14: a subnormal half, i.e. a multiple of 2^-24. Scaling by 2^24 is exact and
    // nearbyint rounds to nearest even in the default rounding mode; 1024 is the smallest
    // normal's encoding, so a carry lands right.
    return sign | uint16_t(std::nearbyint(float_of(ax) * 16777216.0f));
  }
  return sign | uint16_t((ax - 0x38000000u + 0xfffu + ((ax >> 13) & 1)) >> 13);
}
float float_from_f16(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) return std::copysign(float(man) * (1.0f / 16777216.0f), sign ? -1.0f : 1.0f);
  if (exp == 31) return float_of(sign | 0x7f800000u | (man << 13));
  return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

float element(const void* p, KvType type, size_t i) {
  switch (type) {
    case KvType::F32: return static_cast<const float*>(p)[i];
    case KvType::BF16: return float_from_bf16(static_cast<const uint16_t*>(p)[i]);
    case KvType::F16: return float_from_f16(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

#if defined(__AVX512F__)
// 16 elements of `type` starting at element i of p, as floats.
inline __m512 load16(const void* p, KvType type, size_t i) {
  if (type == KvType::F32) return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  const __m256i h =
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
  if (type == KvType::BF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}
#endif

}  // namespace

void kv_store(void* dst, KvType type, const float* src, int n, bool simd) {
  if (type == KvType::F32) {
    std::memcpy(dst, src, sizeof(float) * size_t(n));
    return;
  }
  uint16_t* out = static_cast<uint16_t*>(dst);
  int i = 0;
  if (simd) {
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
    if (type == KvType::BF16)
      for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
#endif
#if defined(__AVX512F__)
    if (type == KvType::F16)
      for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
    if (type == KvType::F16)
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  }
  if (type == KvType::BF16)
    for (; i < n; i++) out[i] = bf16_from_float(src[i]);
  else
    for (; i < n; i++) out[i] = f16_from_float(src[i]);
}

void kv_load(float* dst, const void* src, KvType type, int n, bool simd) {
  int i = 0;
#if defined(__AVX512F__)
  if (simd && type != KvType::F32)
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, load16(src, type, size_t(i)));
#else
  (void)simd;
#endif
  for (; i < n; i++) dst[i] = element(src, type, size_t(i));
}

void kv_store_strided(void* dst, KvType type, const float* src, int n, int stride) {
  for (int i = 0; i < n; i++) {
    const size_t at = size_t(i) * stride;
    if (type == KvType::F32)
      static_cast<float*>(dst)[at] = src[i];
    else
      static_cast<uint16_t*>(dst)[at] =
          type == KvType::BF16 ? bf16_from_float(src[i]) : f16_from_float(src[i]);
  }
}

// Four partial sums over d (d mod 4), added as (s0 + s1) + (s2 + s3): four independent FMA chains
// hide the FMA latency (a single chain would wait 4 cycles per d), and the scalar path below sums
// in the same order with the same fused multiply-adds.
void kv_key_scores(float* scores, const float* q, const void* kt, KvType type, int n, int bs,
                   int hd, float scale, bool simd) {
#if defined(__AVX512F__)
  if (simd && bs % 16 == 0 && hd % 4 == 0) {
    for (int j0 = 0; j0 < n; j0 += 16) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
      for (int d = 0; d < hd; d += 4)
        for (int u = 0; u < 4; u++)
          acc[u] = _mm512_fmadd_ps(_mm512_set1_ps(q[d + u]),
                                   load16(kt, type, size_t(d + u) * bs + j0), acc[u]);
      const __m512 sum = _mm512_mul_ps(
          _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])),
          _mm512_set1_ps(scale));
      // Lanes past n hold whatever the block's unused rows hold: not stored.
      const int m = std::min(16, n - j0);
      _mm512_mask_storeu_ps(scores + j0, __mmask16((1u << m) - 1u), sum);
    }
    return;
  }
#else
  (void)simd;
#endif
  for (int j = 0; j < n; j++) {
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int d = 0; d < hd; d++)
      part[d % 4] = std::fma(q[d], element(kt, type, size_t(d) * bs + j), part[d % 4]);
    scores[j] = ((part[0] + part[1]) + (part[2] + part[3])) * scale;
  }
}

// Up to four 16-wide pieces of y at a time stay in registers over the block's rows (independent
// FMA chains, so the FMA latency is not waited out at every row for small heads). Each element is
// one chain in row order, as the scalar path adds: the sum does not depend on where blocks start,
// so a sequence gets the same output whatever the block size.
void kv_value_accumulate(float* y, const float* p, const void* v, KvType type, int n, int hd,
                         bool simd) {
#if defined(__AVX512F__)
  if (simd && hd % 16 == 0) {
    for (int d0 = 0; d0 < hd; d0 += 64) {
      const int pieces = std::min(4, (hd - d0) / 16);
      __m512 acc[4];
      for (int c = 0; c < pieces; c++) acc[c] = _mm512_loadu_ps(y + d0 + 16 * c);
      for (int j = 0; j < n; j++) {
        const __m512 pj = _mm512_set1_ps(p[j]);
        for (int c = 0; c < pieces; c++)
          acc[c] = _mm512_fmadd_ps(pj, load16(v, type, size_t(j) * hd + d0 + 16 * c), acc[c]);
      }
      for (int c = 0; c < pieces; c++) _mm512_storeu_ps(y + d0 + 16 * c, acc[c]);
    }
    return;
  }
#else
  (void)simd;
#endif
  for (int d = 0; d < hd; d++) {
    float acc = y[d];
    for (int j = 0; j < n; j++) acc = std::fma(p[j], element(v, type, size_t(j) * hd + d), acc);
    y[d] = acc;
  }
}

}  // namespace distill
