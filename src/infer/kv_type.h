// The KV cache's storage type and the three row operations attention needs on it: store a row
// (converted on write), dot a query with a block of key rows, and accumulate a block of value
// rows weighted by attention probabilities. f32 is exact; bf16 and f16 halve the cache's memory
// (and the bytes each decode step streams) for a rounding of every cached value: bf16 keeps f32's
// range with 8 bits of mantissa, f16 has 11 bits but overflows past 65504.
//
// Each operation has an AVX-512 path (F16C for f16 stores) and a portable scalar one; `simd` =
// false forces the scalar one (tests compare the two). The scalar path rounds exactly like the
// hardware conversions (round to nearest even), so stores agree bit for bit and reads differ only
// in summation order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace distill {

enum class KvType : uint8_t { F32, BF16, F16 };

// "f32", "bf16" or "f16"; anything else is an Error naming the value and the choices.
KvType parse_kv_type(const std::string& name);
const char* kv_type_name(KvType type);
size_t kv_type_bytes(KvType type);  // bytes per element: 4 or 2

// dst (n elements of `type`) = src (n) rounded to nearest even.
void kv_store(void* dst, KvType type, const float* src, int n, bool simd = true);
// dst (n) = src (n elements of `type`).
void kv_load(float* dst, const void* src, KvType type, int n, bool simd = true);

// scores[j] = scale * dot(q, k_j) for j < n; q (hd), k (n, hd) of `type`, rows contiguous.
void kv_dot_rows(float* scores, const float* q, const void* k, KvType type, int n, int hd,
                 float scale, bool simd = true);
// y (hd) += sum over j < n of p[j] * v_j; v (n, hd) of `type`, rows contiguous.
void kv_axpy_rows(float* y, const float* p, const void* v, KvType type, int n, int hd,
                  bool simd = true);

// Which SIMD paths this build has (for the bench's and tests' reports).
bool kv_simd_available(KvType type);

}  // namespace distill
