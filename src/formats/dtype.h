// Element types of stored tensors (safetensors spelling) and conversions to and from fp32, the
// precision all of distill computes in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace distill {

enum class DType { BOOL, U8, I8, U16, I16, U32, I32, U64, I64, F16, BF16, F32, F64 };

// Bytes per element.
size_t dtype_size(DType dtype);
// Safetensors spelling: "BOOL", "U8", ..., "BF16", "F32", "F64".
const char* dtype_name(DType dtype);
// Inverse of dtype_name (exact, case-sensitive); nullopt for anything else, including the
// safetensors dtypes distill does not handle (F8_E4M3, F8_E5M2, ...).
std::optional<DType> dtype_from_name(std::string_view name);

// IEEE binary16 <-> binary32. f32_to_f16 rounds to nearest, ties to even; overflow (|x| >= 65520)
// gives inf; values below the smallest subnormal half round to signed zero; NaN stays NaN (quiet,
// sign and top payload bits kept).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// bfloat16 <-> binary32. bf16 is the top half of an fp32, so widening is exact; narrowing rounds to
// nearest, ties to even (overflow gives inf); NaN stays NaN (quiet, sign kept).
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// dst[i] = (float)src[i] for i < count. src is `count` little-endian elements of `dtype`, with
// no alignment requirement (safetensors data need not be aligned). BOOL gives 0 or 1. Integers
// beyond 2^24 and F64 round to the nearest float.
void convert_to_f32(float* dst, const void* src, DType dtype, size_t count);
// dst (`count` elements of `dtype`, any alignment) from fp32. dtype must be F16, BF16, F32 or F64;
// anything else throws distill::Error.
void convert_from_f32(void* dst, DType dtype, const float* src, size_t count);

}  // namespace distill
