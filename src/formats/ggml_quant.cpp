#include "formats/ggml_quant.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/dtype.h"

namespace distill {

namespace {

// ggml.h's numbering; the byte sizes are those of ggml's block structs.
constexpr uint32_t kTypeCount = 43;
const GgmlTypeTraits kTraits[kTypeCount] = {
    {"f32", 1, 4},        {"f16", 1, 2},       {"q4_0", 32, 18},    {"q4_1", 32, 20},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"q5_0", 32, 22},    {"q5_1", 32, 24},
    {"q8_0", 32, 34},     {"q8_1", 32, 36},    {"q2_K", 256, 84},   {"q3_K", 256, 110},
    {"q4_K", 256, 144},   {"q5_K", 256, 176},  {"q6_K", 256, 210},  {"q8_K", 256, 292},
    {"iq2_xxs", 256, 66}, {"iq2_xs", 256, 74}, {"iq3_xxs", 256, 98}, {"iq1_s", 256, 50},
    {"iq4_nl", 32, 18},   {"iq3_s", 256, 110}, {"iq2_s", 256, 82},  {"iq4_xs", 256, 136},
    {"i8", 1, 1},         {"i16", 1, 2},       {"i32", 1, 4},       {"i64", 1, 8},
    {"f64", 1, 8},        {"iq1_m", 256, 56},  {"bf16", 1, 2},      {nullptr, 0, 0},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"tq1_0", 256, 54},  {"tq2_0", 256, 66},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {nullptr, 0, 0},     {"mxfp4", 32, 17},
    {"nvfp4", 64, 36},    {"q1_0", 128, 18},   {"q2_0", 64, 18},
};

// Numbers of the types below, by ggml.h.
constexpr uint32_t kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ6_K = 14, kI8 = 24, kI16 = 25, kI32 = 26,
                   kF64 = 28;

uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
float load_half(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// Blocks of 32: f16 d, 32 x int8 q; x = d * q.
void dequantize_q8_0(const uint8_t* src, float* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 4096)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * 34;
    const float d = load_half(blk);
    for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * float(int8_t(blk[2 + j]));
  }
}

// Blocks of 32: f16 d, 16 bytes of nibbles (low nibbles are elements 0-15, high 16-31);
// x = d * (q - 8).
void dequantize_q4_0(const uint8_t* src, float* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 4096)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * 18;
    const float d = load_half(blk);
    for (int j = 0; j < 16; j++) {
      dst[b * 32 + j] = d * float((blk[2 + j] & 0x0F) - 8);
      dst[b * 32 + j + 16] = d * float((blk[2 + j] >> 4) - 8);
    }
  }
}

// Blocks of 32: f16 d, f16 m, 16 bytes of nibbles; x = d * q + m.
void dequantize_q4_1(const uint8_t* src, float* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 4096)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * 20;
    const float d = load_half(blk), m = load_half(blk + 2);
    for (int j = 0; j < 16; j++) {
      dst[b * 32 + j] = d * float(blk[4 + j] & 0x0F) + m;
      dst[b * 32 + j + 16] = d * float(blk[4 + j] >> 4) + m;
    }
  }
}

// Q5_0 (f16 d, u32 high bits, 16 bytes of nibbles; x = d * (q - 16)) and Q5_1 (f16 d, f16 m,
// u32 high bits, nibbles; x = d * q + m). Bit j of the u32 is the 5th bit of element j.
void dequantize_q5(const uint8_t* src, float* dst, int64_t nblocks, bool with_min) {
  const size_t bytes = with_min ? 24 : 22;
#pragma omp parallel for schedule(static) if (nblocks > 4096)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * bytes;
    const float d = load_half(blk);
    const float m = with_min ? load_half(blk + 2) : 0.0f;
    const uint8_t* qh_p = blk + (with_min ? 4 : 2);
    const uint32_t qh = load_u32(qh_p);
    const uint8_t* qs = qh_p + 4;
    const int offset = with_min ? 0 : 16;
    for (int j = 0; j < 16; j++) {
      const int lo = (qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
      const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      dst[b * 32 + j] = d * float(lo - offset) + m;
      dst[b * 32 + j + 16] = d * float(hi - offset) + m;
    }
  }
}

// Q4_K super-blocks of 256: f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and eight
// 6-bit mins, 128 bytes of nibbles. Sub-block s (32 elements) is x = d*scale_s*q - dmin*min_s;
// each 32 bytes of nibbles hold sub-blocks 2i (low nibbles) and 2i+1 (high nibbles).
void dequantize_q4_k(const uint8_t* src, float* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 512)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * 144;
    const float d = load_half(blk), dmin = load_half(blk + 2);
    const uint8_t* sc = blk + 4;
    const uint8_t* qs = blk + 16;
    float* y = dst + b * 256;
    for (int s = 0; s < 8; s++) {
      int scale, min;
      if (s < 4) {
        scale = sc[s] & 63;
        min = sc[s + 4] & 63;
      } else {
        scale = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
        min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
      }
      const float ds = d * float(scale), ms = dmin * float(min);
      const uint8_t* q = qs + (s / 2) * 32;
      const int shift = (s % 2) * 4;
      for (int j = 0; j < 32; j++) y[s * 32 + j] = ds * float((q[j] >> shift) & 0x0F) - ms;
    }
  }
}

// Q6_K super-blocks of 256: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8
// scales (one per 16 elements), f16 d; x = d * scale * (q - 32), q a 6-bit value. Each half of
// 128 elements uses 64 low-nibble bytes and 32 high-bit bytes as ggml lays them out.
void dequantize_q6_k(const uint8_t* src, float* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 512)
  for (int64_t b = 0; b < nblocks; b++) {
    const uint8_t* blk = src + b * 210;
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const int8_t* scales = reinterpret_cast<const int8_t*>(blk + 192);
    const float d = load_half(blk + 208);
    float* y = dst + b * 256;
    for (int half = 0; half < 2; half++) {
      const uint8_t* l = ql + half * 64;
      const uint8_t* h = qh + half * 32;
      const int8_t* s = scales + half * 8;
      float* out = y + half * 128;
      for (int j = 0; j < 32; j++) {
        const int g = j / 16;
        const int q1 = ((l[j] & 0x0F) | (((h[j] >> 0) & 3) << 4)) - 32;
        const int q2 = ((l[j + 32] & 0x0F) | (((h[j] >> 2) & 3) << 4)) - 32;
        const int q3 = ((l[j] >> 4) | (((h[j] >> 4) & 3) << 4)) - 32;
        const int q4 = ((l[j + 32] >> 4) | (((h[j] >> 6) & 3) << 4)) - 32;
        out[j] = d * float(s[g]) * float(q1);
        out[j + 32] = d * float(s[g + 2]) * float(q2);
        out[j + 64] = d * float(s[g + 4]) * float(q3);
        out[j + 96] = d * float(s[g + 6]) * float(q4);
      }
    }
  }
}

void quantize_q8_0(const float* src, uint8_t* dst, int64_t nblocks) {
#pragma omp parallel for schedule(static) if (nblocks > 4096)
  for (int64_t b = 0; b < nblocks; b++) {
    const float* x = src + b * 32;
    uint8_t* blk = dst + b * 34;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(blk, &dh, 2);
    for (int j = 0; j < 32; j++) blk[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
  }
}

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  if (type >= kTypeCount || kTraits[type].name == nullptr) return nullptr;
  return &kTraits[type];
}

const char* ggml_type_name(GgmlType type) {
  const GgmlTypeTraits* t = ggml_type_traits(uint32_t(type));
  return t ? t->name : "unknown";
}

size_t ggml_type_bytes(GgmlType type, int64_t n) {
  const GgmlTypeTraits* t = ggml_type_traits(uint32_t(type));
  if (!t) throw Error("ggml type {} is not a known type", uint32_t(type));
  if (n < 0 || n % t->block != 0)
    throw Error("{} elements do not fill whole {} blocks of {}", n, t->name, t->block);
  return size_t(n / t->block) * t->block_bytes;
}

bool ggml_can_dequantize(GgmlType type) {
  switch (uint32_t(type)) {
    case uint32_t(GgmlType::F32): case uint32_t(GgmlType::F16): case uint32_t(GgmlType::BF16):
    case uint32_t(GgmlType::Q8_0): case uint32_t(GgmlType::Q4_0): case uint32_t(GgmlType::Q4_K):
    case kQ4_1: case kQ5_0: case kQ5_1: case kQ6_K: case kI8: case kI16: case kI32: case kF64:
      return true;
    default:
      return false;
  }
}

void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const GgmlTypeTraits* t = ggml_type_traits(uint32_t(type));
  DISTILL_CHECK(t && n >= 0 && n % t->block == 0);
  const int64_t nblocks = n / t->block;
  switch (uint32_t(type)) {
    case uint32_t(GgmlType::F32): convert_to_f32(dst, src, DType::F32, size_t(n)); return;
    case uint32_t(GgmlType::F16): convert_to_f32(dst, src, DType::F16, size_t(n)); return;
    case uint32_t(GgmlType::BF16): convert_to_f32(dst, src, DType::BF16, size_t(n)); return;
    case kF64: convert_to_f32(dst, src, DType::F64, size_t(n)); return;
    case kI8: convert_to_f32(dst, src, DType::I8, size_t(n)); return;
    case kI16: convert_to_f32(dst, src, DType::I16, size_t(n)); return;
    case kI32: convert_to_f32(dst, src, DType::I32, size_t(n)); return;
    case uint32_t(GgmlType::Q8_0): dequantize_q8_0(src, dst, nblocks); return;
    case uint32_t(GgmlType::Q4_0): dequantize_q4_0(src, dst, nblocks); return;
    case kQ4_1: dequantize_q4_1(src, dst, nblocks); return;
    case kQ5_0: dequantize_q5(src, dst, nblocks, false); return;
    case kQ5_1: dequantize_q5(src, dst, nblocks, true); return;
    case uint32_t(GgmlType::Q4_K): dequantize_q4_k(src, dst, nblocks); return;
    case kQ6_K: dequantize_q6_k(src, dst, nblocks); return;
    default:
      throw Error("ggml type {} cannot be converted to f32 (supported: f32, f16, bf16, f64, i8, "
                  "i16, i32, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K)", t->name);
  }
}

bool ggml_can_quantize(GgmlType type) {
  return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16 ||
         type == GgmlType::Q8_0;
}

void ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n) {
  switch (type) {
    case GgmlType::F32: convert_from_f32(dst, DType::F32, src, size_t(n)); return;
    case GgmlType::F16: convert_from_f32(dst, DType::F16, src, size_t(n)); return;
    case GgmlType::BF16: convert_from_f32(dst, DType::BF16, src, size_t(n)); return;
    case GgmlType::Q8_0:
      if (n % 32 != 0) throw Error("q8_0 needs a multiple of 32 elements, got {}", n);
      quantize_q8_0(src, dst, n / 32);
      return;
    default:
      throw Error("cannot write ggml type {} (supported: f32, f16, bf16, q8_0)",
                  ggml_type_name(type));
  }
}

}  // namespace distill
