// The KV cache's storage type and the operations attention needs on it: store a row (converted
// on write), the scores of a query against a block of keys, and the sum of a block of values
// weighted by attention probabilities. f32 is exact; bf16 and f16 halve the cache's memory (and
// the bytes each decode step reads) for a rounding of every cached value: bf16 keeps f32's range
// with 8 bits of mantissa, f16 has 11 bits but overflows past 65504.
//
// Block layouts (one kv head's part of a cache block of bs positions): keys transposed, (hd, bs):
// element d of position j at kt[d * bs + j], so one vector FMA per d step gives 16 positions'
// partial scores at once, with no horizontal sums; values as rows, (bs, hd), so each value row
// is added into the output with vector FMAs.
//
// Each operation has an AVX-512 path (taken when hd, and bs for keys, are multiples of 16) and a
// portable scalar one; `simd` = false forces the scalar one (tests compare the two). The scalar
// path rounds and sums exactly like the vector one (round to nearest even on store, the same
// partial sums, fused multiply-adds), so the two agree bit for bit.
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
// The same, element i at dst + i * stride elements (a key column of a transposed block).
void kv_store_strided(void* dst, KvType type, const float* src, int n, int stride);
// dst (n) = src (n elements of `type`).
void kv_load(float* dst, const void* src, KvType type, int n, bool simd = true);

// scores[j] = scale * sum over d of q[d] * kt[d * bs + j], for j < n <= bs; q (hd), kt (hd, bs).
void kv_key_scores(float* scores, const float* q, const void* kt, KvType type, int n, int bs,
                   int hd, float scale, bool simd = true);
// y[d] += sum over j < n of p[j] * v[j * hd + d]; y (hd), p (n), v (n, hd) rows.
void kv_value_accumulate(float* y, const float* p, const void* v, KvType type, int n, int hd,
                         bool simd = true);

// Which SIMD paths this build has (for the bench's and tests' reports).
bool kv_simd_available(KvType type);

}  // namespace distill
