#include "formats/dtype.h"

#include <bit>
#include <cstring>

#include "core/error.h"

namespace distill {

// Tensor bytes are read and written as they sit in memory; the formats are little-endian.
static_assert(std::endian::native == std::endian::little, "distill assumes a little-endian host");

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::U16, "U16", 2},   {DType::I16, "I16", 2}, {DType::U32, "U32", 4},
    {DType::I32, "I32", 4},   {DType::U64, "U64", 8}, {DType::I64, "I64", 8},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},
};

const DTypeEntry& dtype_entry(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  throw Error("invalid DType value {}", static_cast<int>(dtype));
}

// Loads the i-th element of type T from possibly unaligned memory.
template <typename T>
T load(const uint8_t* p, size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}

template <typename T>
void store(uint8_t* p, size_t i, T v) {
  std::memcpy(p + i * sizeof(T), &v, sizeof(T));
}

template <typename T>
void widen(float* dst, const uint8_t* src, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load<T>(src, i));
}

}  // namespace

size_t dtype_size(DType dtype) { return dtype_entry(dtype).size; }

const char* dtype_name(DType dtype) { return dtype_entry(dtype).name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {
    // inf (mant == 0) or NaN: keep the payload in the top mantissa bits.
    return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  }
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32 (mant < 2^10).
    float magnitude = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {
    if (ax == 0x7f800000u) return sign | 0x7c00u;
    // NaN: set the quiet bit so a payload living only in the dropped low bits cannot turn the
    // result into inf.
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  // 65520 = 65504 (max half) + half an ulp (16): the tie rounds to even, i.e. up, to inf.
  if (ax >= 0x477ff000u) return sign | 0x7c00u;
  if (ax >= 0x38800000u) {
    // Result is a normal half (|x| >= 2^-14). Rebias 127 -> 15, then round the 23-bit mantissa to
    // 10 bits, ties to even; a carry out of the mantissa correctly bumps the exponent.
    uint32_t m = ax - ((127u - 15u) << 23);
    m += 0xfffu + ((m >> 13) & 1u);
    return static_cast<uint16_t>(sign | (m >> 13));
  }
  // Subnormal half: result = round(|x| / 2^-24). 2^-25 (0x33000000) is the tie between 0 and the
  // smallest subnormal and rounds to even (0), as does everything below it.
  if (ax <= 0x33000000u) return sign;
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - (ax >> 23);  // |x| / 2^-24 = mant >> shift; here 14 <= shift <= 24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // q == 0x400 is the smallest normal: right
  return static_cast<uint16_t>(sign | q);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    // NaN: truncate and force the quiet bit, so a payload only in the low half stays NaN.
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  // Round to nearest even on the dropped 16 bits; overflow carries into the exponent to give inf.
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

void convert_to_f32(float* dst, const void* src_bytes, DType dtype, size_t count) {
  const auto* src = static_cast<const uint8_t*>(src_bytes);
  switch (dtype) {
    case DType::BOOL:
      for (size_t i = 0; i < count; ++i) dst[i] = src[i] != 0 ? 1.0f : 0.0f;
      return;
    case DType::U8: widen<uint8_t>(dst, src, count); return;
    case DType::I8: widen<int8_t>(dst, src, count); return;
    case DType::U16: widen<uint16_t>(dst, src, count); return;
    case DType::I16: widen<int16_t>(dst, src, count); return;
    case DType::U32: widen<uint32_t>(dst, src, count); return;
    case DType::I32: widen<int32_t>(dst, src, count); return;
    case DType::U64: widen<uint64_t>(dst, src, count); return;
    case DType::I64: widen<int64_t>(dst, src, count); return;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) dst[i] = f16_to_f32(load<uint16_t>(src, i));
      return;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_f32(load<uint16_t>(src, i));
      return;
    case DType::F32:
      if (count > 0) std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::F64: widen<double>(dst, src, count); return;
  }
  throw Error("convert_to_f32: invalid DType value {}", static_cast<int>(dtype));
}

void convert_from_f32(void* dst_bytes, DType dtype, const float* src, size_t count) {
  auto* dst = static_cast<uint8_t*>(dst_bytes);
  switch (dtype) {
    case DType::F16:
      for (size_t i = 0; i < count; ++i) store<uint16_t>(dst, i, f32_to_f16(src[i]));
      return;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) store<uint16_t>(dst, i, f32_to_bf16(src[i]));
      return;
    case DType::F32:
      if (count > 0) std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i) store<double>(dst, i, static_cast<double>(src[i]));
      return;
    default:
      break;
  }
  throw Error("convert_from_f32: cannot convert to {} (only F16, BF16, F32, F64)",
              dtype_name(dtype));
}

}  // namespace distill
