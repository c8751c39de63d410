// ggml tensor element types as stored in GGUF files: block sizes, bytes per block, and the
// conversions distill needs (dequantization to fp32 for reading, quantization for writing).
// Block layouts follow ggml (ggml-common.h); every multi-byte field is little-endian.
#pragma once
#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"

namespace distill {

struct GgmlTypeTraits {
  const char* name;    // ggml's spelling: "f32", "q8_0", "q4_K", ...
  int64_t block;       // elements per block (1 for plain types)
  size_t block_bytes;  // bytes per block
};

// Traits of ggml type number `type`, or nullptr for a number ggml does not define (or removed,
// e.g. 4, 5, 31-33, 36-38).
const GgmlTypeTraits* ggml_type_traits(uint32_t type);

// Types read_f32 can convert: F32, F16, BF16, F64, I8, I16, I32, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q6_K.
bool ggml_can_dequantize(GgmlType type);
// dst (n) from src (n elements of `type`, any alignment); n a multiple of the block size.
void ggml_dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n);

// Types ggml_quantize can produce: F32, F16, BF16, Q8_0.
bool ggml_can_quantize(GgmlType type);
// dst (ggml_type_bytes(type, n) bytes) from src (n); n a multiple of the block size.
// Q8_0 follows ggml's reference quantizer: per block of 32, d = max|x| / 127 stored as f16,
// q = round(x * (1/d)) with the unrounded d, as int8.
void ggml_quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n);

}  // namespace distill
