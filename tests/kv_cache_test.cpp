// The paged KV cache: logits through scattered, reused blocks equal those of a fresh cache
// (bit for bit in f32), blocks go back to the pool on reset and are reused, reservations make
// admission wait instead of running out mid-sequence, and a request larger than the pool is a
// clear error. The storage types: f32/bf16/f16 conversions round to nearest even like the
// hardware, the scalar and SIMD row operations agree, and a bf16/f16 cache gives logits within a
// stated tolerance of f32 with the same top-1 token.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "infer/batch_decoder.h"
#include "infer/kv_cache.h"
#include "infer/kv_type.h"
#include "model/model.h"
#include "model/presets.h"

namespace distill {
namespace {

std::vector<int32_t> tokens(int n, int salt) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) t[size_t(i)] = int32_t((i * 37 + salt * 11 + 5) % 256);
  return t;
}

// Runs `ids` alone through a fresh cache whose one block per slot holds all max_len positions
// (the contiguous layout of the cache before paging), in forwards of the given chunk sizes; the
// logits of every row (n, V).
std::vector<float> fresh_logits(Model& m, const std::vector<int32_t>& ids, int max_len,
                                const std::vector<int>& chunks) {
  KvCacheOptions o;
  o.block_size = max_len;
  auto cache = make_kv_cache(m, 1, max_len, o);
  std::vector<float> out;
  int from = 0;
  for (int n : chunks) {
    InferBatch b;
    for (int t = from; t < from + n; t++) b.add(ids[size_t(t)], 0, t, true);
    const float* l = m.forward_rows(b, *cache);
    out.insert(out.end(), l, l + size_t(n) * m.config().vocab_size);
    from += n;
  }
  return out;
}

// Sequence z runs in slot 0 after x was evicted from it, through blocks of 4 positions from a
// pool that x and y scattered (y leaves between z's two chunks, and a new sequence w takes y's
// slot afterwards): z's blocks are neither contiguous nor in order. Its logits equal, bit for
// bit, those of z alone in a fresh contiguous cache fed in the same chunks; and within 1e-5
// (relative to the largest logit) those of z fed in one forward (oneDNN's GEMM may sum in
// another order when the number of rows changes).
TEST(PagedKvCache, ScatteredBlocksGiveTheLogitsOfAFreshCache) {
  for (const char* preset : {"gpt2-tiny", "llama-tiny"}) {
    Model m(model_preset(preset));
    m.init_weights(21);
    const int V = m.config().vocab_size, max_len = 64;
    KvCacheOptions o;
    o.block_size = 4;
    auto cache = make_kv_cache(m, 2, max_len, o);
    const auto x = tokens(10, 1), y = tokens(21, 2), z = tokens(23, 3), w = tokens(5, 4);
    InferBatch b;
    for (size_t t = 0; t < x.size(); t++) b.add(x[t], 0, int(t), false);
    for (size_t t = 0; t < 13; t++) b.add(y[t], 1, int(t), false);
    m.forward_rows(b, *cache);
    const std::vector<int> x_blocks = cache->table(0);
    cache->reset(0);
    // y grows by two blocks: it takes two of x's freed ones.
    b.clear();
    for (int t = 13; t < 21; t++) b.add(y[size_t(t)], 1, t, false);
    m.forward_rows(b, *cache);
    std::vector<float> got;
    for (int part = 0; part < 2; part++) {
      if (part) cache->reset(1);  // y leaves: its blocks go to z's second chunk
      b.clear();
      const int from = part ? 9 : 0, to = part ? int(z.size()) : 9;
      for (int t = from; t < to; t++) b.add(z[size_t(t)], 0, t, true);
      const float* l = m.forward_rows(b, *cache);
      got.insert(got.end(), l, l + size_t(to - from) * V);
    }
    b.clear();
    for (size_t t = 0; t < w.size(); t++) b.add(w[t], 1, int(t), false);
    m.forward_rows(b, *cache);
    const std::vector<int>& zt = cache->table(0);
    ASSERT_EQ(zt.size(), 6u);
    EXPECT_FALSE(std::is_sorted(zt.begin(), zt.end())) << preset << ": blocks were not scattered";
    EXPECT_TRUE(std::any_of(zt.begin(), zt.end(), [&](int blk) {
      return std::find(x_blocks.begin(), x_blocks.end(), blk) != x_blocks.end();
    })) << "no freed block was reused";
    const std::vector<float> want = fresh_logits(m, z, max_len, {9, 14});
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << preset << ": paged logits differ from a fresh single-sequence run";
    const std::vector<float> one = fresh_logits(m, z, max_len, {23});
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < one.size(); i++) {
      max_diff = std::max(max_diff, double(std::fabs(got[i] - one[i])));
      max_ref = std::max(max_ref, double(std::fabs(one[i])));
    }
    EXPECT_LT(max_diff / max_ref, 1e-5) << preset;
  }
}

TEST(PagedKvCache, ResetReturnsBlocksAndTheyAreReused) {
  Model m(model_preset("gpt2-tiny"));
  KvCacheOptions o;
  o.block_size = 8;
  o.blocks = 10;
  auto cache = make_kv_cache(m, 3, 64, o);
  EXPECT_EQ(cache->held_blocks(), 0);
  cache->ensure(0, 20);  // 3 blocks
  cache->ensure(1, 9);   // 2 blocks
  EXPECT_EQ(cache->held_blocks(), 5);
  EXPECT_EQ(cache->free_blocks(), 5);
  const std::vector<int> freed = cache->table(0);
  cache->reset(0);
  EXPECT_EQ(cache->held_blocks(), 2);
  EXPECT_EQ(cache->length[0], 0);
  cache->ensure(2, 24);  // takes the three just freed (most recently used first)
  std::vector<int> a = cache->table(2), b = freed;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
}

// Reservations: admission is refused (false) while the pool cannot promise a sequence its
// blocks, succeeds once a slot is reset, and a sequence larger than the whole pool is an error
// naming the numbers.
TEST(PagedKvCache, ReservationsWaitAndTooLongIsAClearError) {
  Model m(model_preset("gpt2-tiny"));
  KvCacheOptions o;
  o.block_size = 16;
  o.blocks = 6;
  auto cache = make_kv_cache(m, 3, 200, o);
  EXPECT_TRUE(cache->reserve(0, 64));   // 4 blocks promised
  EXPECT_FALSE(cache->reserve(1, 40));  // 3 more do not fit
  EXPECT_TRUE(cache->reserve(1, 32));   // 2 do
  EXPECT_EQ(cache->free_blocks(), 0);
  // Promised blocks are there when the rows come; nobody else can take them.
  cache->ensure(0, 64);
  cache->ensure(1, 32);
  try {
    cache->ensure(2, 1);
    FAIL() << "an unpromised block came out of an exhausted pool";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache pool exhausted"), std::string::npos) << e.what();
  }
  cache->reset(0);
  EXPECT_TRUE(cache->reserve(2, 40));
  try {
    cache->reserve(0, 97);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "a sequence of 97 positions needs 7 KV cache blocks of 16 positions, but the "
                 "whole pool has 6 blocks");
  }
}

// The decoder waits for blocks: with a pool for one sequence at a time, three prompts are
// admitted one after another and each decodes exactly what it decodes alone.
TEST(PagedKvCache, DecoderAdmissionWaitsForBlocks) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(8);
  DecoderOptions o;
  o.kv.block_size = 16;
  o.kv.blocks = 5;  // 80 positions: one sequence of 20 + 40 at a time
  BatchDecoder dec(m, 3, 128, o);
  auto request = [](int id) {
    DecodeRequest r;
    r.id = id;
    r.prompt = tokens(20, id);
    r.max_tokens = 40;
    r.sampling.temperature = 0.7f;
    r.seed = 100 + uint64_t(id);
    return r;
  };
  std::vector<std::vector<int32_t>> out(3);
  int next = 0, max_live = 0;
  while (next < 3 || dec.live() > 0) {
    while (next < 3 && dec.admit(request(next))) next++;
    max_live = std::max(max_live, dec.live());
    for (const DecodedToken& d : dec.step()) {
      out[size_t(d.id)].push_back(d.token);
      if (d.at_limit) dec.finish(d.id);
    }
  }
  EXPECT_EQ(max_live, 1);
  for (int i = 0; i < 3; i++) {
    BatchDecoder alone(m, 1, 128);
    ASSERT_TRUE(alone.admit(request(i)));
    std::vector<int32_t> want;
    while (alone.live() > 0)
      for (const DecodedToken& d : alone.step()) {
        want.push_back(d.token);
        if (d.at_limit) alone.finish(d.id);
      }
    EXPECT_EQ(out[size_t(i)], want) << i;
  }
  DecodeRequest big = request(0);
  big.max_tokens = 70;  // 89 positions > 80
  EXPECT_THROW(dec.admit(big), Error);
}

TEST(KvType, ParsesNamesAndRefusesOthers) {
  EXPECT_EQ(parse_kv_type("f32"), KvType::F32);
  EXPECT_EQ(parse_kv_type("bf16"), KvType::BF16);
  EXPECT_EQ(parse_kv_type("f16"), KvType::F16);
  try {
    parse_kv_type("fp8");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown KV cache type 'fp8': expected f32, bf16 or f16");
  }
}

uint16_t store1(KvType t, float f, bool simd) {
  // 16 copies so the SIMD store path runs.
  std::vector<float> src(16, f);
  std::vector<uint16_t> dst(16);
  kv_store(dst.data(), t, src.data(), 16, simd);
  return dst[0];
}

TEST(KvType, ConversionsRoundToNearestEven) {
  for (bool simd : {false, true}) {
    EXPECT_EQ(store1(KvType::BF16, 1.0f, simd), 0x3f80);
    EXPECT_EQ(store1(KvType::BF16, -2.5f, simd), 0xc020);
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even one (1).
    EXPECT_EQ(store1(KvType::BF16, 1.00390625f, simd), 0x3f80);
    EXPECT_EQ(store1(KvType::BF16, 1.01171875f, simd), 0x3f82);  // 1 + 3*2^-8: up to even
    EXPECT_EQ(store1(KvType::F16, 1.0f, simd), 0x3c00);
    EXPECT_EQ(store1(KvType::F16, 65504.0f, simd), 0x7bff);
    EXPECT_EQ(store1(KvType::F16, 65520.0f, simd), 0x7c00);  // rounds past the largest: inf
    EXPECT_EQ(store1(KvType::F16, -0.0f, simd), 0x8000);
    EXPECT_EQ(store1(KvType::F16, std::ldexp(1.0f, -24), simd), 0x0001);  // smallest subnormal
    EXPECT_EQ(store1(KvType::F16, std::ldexp(3.0f, -25), simd), 0x0002);  // 1.5 ulp: to even
    EXPECT_EQ(store1(KvType::F16, 1.0f + std::ldexp(1.0f, -11), simd), 0x3c00);  // tie: even
  }
}

// Random rows of odd lengths (SIMD bodies and scalar tails): stores agree bit for bit, and so
// do the loads of what was stored.
TEST(KvType, ScalarAndSimdStoresAgree) {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (KvType t : {KvType::BF16, KvType::F16})
    for (int n : {1, 15, 16, 37, 64, 100}) {
      std::vector<float> src(static_cast<size_t>(n));
      for (float& f : src) f = normal(gen) * std::exp2(float(int(gen() % 20) - 10));
      std::vector<uint16_t> a(static_cast<size_t>(n)), b(a);
      kv_store(a.data(), t, src.data(), n, false);
      kv_store(b.data(), t, src.data(), n, true);
      EXPECT_EQ(a, b) << kv_type_name(t) << " n=" << n;
      std::vector<float> la(static_cast<size_t>(n)), lb(la);
      kv_load(la.data(), a.data(), t, n, false);
      kv_load(lb.data(), a.data(), t, n, true);
      EXPECT_EQ(la, lb);
      for (int i = 0; i < n; i++) {
        // Relative rounding error: 2^-9 for bf16, 2^-12 for f16 (normal range).
        const float tol = std::fabs(src[size_t(i)]) * (t == KvType::BF16 ? 0x1p-8f : 0x1p-11f);
        EXPECT_NEAR(la[size_t(i)], src[size_t(i)], tol + 1e-7f);
      }
    }
}

// kv_key_scores / kv_value_accumulate: the SIMD path against the scalar one, bit for bit (the
// same partial sums and fused multiply-adds), over block and head sizes that take the SIMD body
// (bs 16, 32; hd 16, 32, 64, 80), fall back (bs 24, hd 24, 20) and partly filled blocks; both
// within a few f32 epsilons times the magnitudes of the exact sum of the stored values.
TEST(KvType, ScalarAndSimdBlockOperationsAgree) {
  std::printf("SIMD block operations compiled in: %s\n",
              kv_simd_available(KvType::BF16) ? "yes" : "no");
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (KvType t : {KvType::F32, KvType::BF16, KvType::F16})
    for (int bs : {16, 24, 32})
      for (int hd : {16, 20, 24, 32, 64, 80})
        for (int n : {1, 13, bs}) {
          std::vector<float> q(static_cast<size_t>(hd)), kf(static_cast<size_t>(hd * bs)),
              vf(static_cast<size_t>(bs * hd)), p(static_cast<size_t>(bs));
          for (float& f : q) f = normal(gen);
          for (float& f : kf) f = normal(gen);
          for (float& f : vf) f = normal(gen);
          for (float& f : p) f = std::fabs(normal(gen));
          // Keys written column by column (position j: element d at d * bs + j), as the cache
          // does; values as rows.
          std::vector<uint8_t> k(kf.size() * kv_type_bytes(t)), v(vf.size() * kv_type_bytes(t));
          for (int j = 0; j < bs; j++)
            kv_store_strided(k.data() + size_t(j) * kv_type_bytes(t), t,
                             kf.data() + size_t(j) * hd, hd, bs);
          kv_store(v.data(), t, vf.data(), int(vf.size()));
          std::vector<float> kq(kf.size()), vq(vf.size());
          kv_load(kq.data(), k.data(), t, int(kf.size()));
          kv_load(vq.data(), v.data(), t, int(vf.size()));
          std::vector<float> s0(static_cast<size_t>(bs), -1.0f), s1(s0);
          kv_key_scores(s0.data(), q.data(), k.data(), t, n, bs, hd, 0.5f, false);
          kv_key_scores(s1.data(), q.data(), k.data(), t, n, bs, hd, 0.5f, true);
          const std::string what = std::string(kv_type_name(t)) + " bs=" + std::to_string(bs) +
                                   " hd=" + std::to_string(hd) + " n=" + std::to_string(n);
          EXPECT_EQ(s0, s1) << what;
          for (int j = n; j < bs; j++) EXPECT_EQ(s1[size_t(j)], -1.0f) << "wrote past n: " << what;
          for (int j = 0; j < n; j++) {
            double mag = 0.0, exact = 0.0;
            for (int d = 0; d < hd; d++) {
              const double x = double(q[size_t(d)]) * kq[size_t(d) * bs + j];
              mag += std::fabs(x);
              exact += x;
            }
            EXPECT_NEAR(s1[size_t(j)], 0.5 * exact, 0.5 * mag * 4 * 1.2e-7) << what;
          }
          std::vector<float> y0(static_cast<size_t>(hd), 0.25f), y1(y0);
          kv_value_accumulate(y0.data(), p.data(), v.data(), t, n, hd, false);
          kv_value_accumulate(y1.data(), p.data(), v.data(), t, n, hd, true);
          EXPECT_EQ(y0, y1) << what;
          for (int d = 0; d < hd; d++) {
            double mag = 0.25, exact = 0.25;
            for (int j = 0; j < n; j++) {
              const double x = double(p[size_t(j)]) * vq[size_t(j) * hd + d];
              mag += std::fabs(x);
              exact += x;
            }
            EXPECT_NEAR(y1[size_t(d)], exact, mag * n * 1.2e-7) << what;
          }
        }
}

// A bf16 or f16 cache on the tiny models: every row's logits within a stated tolerance of the f32
// cache's (relative to the largest |logit|: 5e-3 for bf16's 8-bit mantissa, 1e-3 for f16's 11;
// measured 5e-4 and 8e-5),
// and the same most likely token wherever f32's top two are further apart than that tolerance.
TEST(KvType, HalfPrecisionCachesStayCloseToF32) {
  for (const char* preset : {"gpt2-tiny", "llama-tiny"})
    for (KvType t : {KvType::BF16, KvType::F16}) {
      Model m(model_preset(preset));
      m.init_weights(31);
      const int V = m.config().vocab_size, T = 48;
      const auto ids = tokens(T, 9);
      auto run = [&](KvType type) {
        KvCacheOptions o;
        o.type = type;
        auto cache = make_kv_cache(m, 1, T, o);
        InferBatch b;
        for (int i = 0; i < T; i++) b.add(ids[size_t(i)], 0, i, true);
        const float* l = m.forward_rows(b, *cache);
        return std::vector<float>(l, l + size_t(T) * V);
      };
      const std::vector<float> want = run(KvType::F32), got = run(t);
      double max_diff = 0.0, max_ref = 0.0;
      for (size_t i = 0; i < want.size(); i++) {
        max_diff = std::max(max_diff, double(std::fabs(got[i] - want[i])));
        max_ref = std::max(max_ref, double(std::fabs(want[i])));
      }
      const double rel = t == KvType::BF16 ? 5e-3 : 1e-3;
      EXPECT_GT(max_diff, 0.0) << "the cache did not round";
      EXPECT_LT(max_diff / max_ref, rel) << preset << " " << kv_type_name(t);
      std::printf("%s %s cache: max |logit - f32| / max |logit| = %.2e\n", preset,
                  kv_type_name(t), max_diff / max_ref);
      int compared = 0;
      for (int r = 0; r < T; r++) {
        const float* w = want.data() + size_t(r) * V;
        const float* g = got.data() + size_t(r) * V;
        std::vector<float> sorted(w, w + V);
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
        if (sorted[0] - sorted[1] <= 2 * rel * max_ref) continue;
        compared++;
        EXPECT_EQ(std::max_element(w, w + V) - w, std::max_element(g, g + V) - g)
            << preset << " " << kv_type_name(t) << " row " << r;
      }
      EXPECT_GT(compared, T / 2) << "too few rows with a clear top-1 to compare";
    }
}

}  // namespace
}  // namespace distill
