// Output watermarks, applied in the sampler through the Generator's LogitsProcessor hook, and the
// per-token scores their detectors add up.
//
// Kirchenbauer et al. 2023 ("A Watermark for Large Language Models"): a keyed hash of the previous
// `context` tokens seeds a green list holding a fraction gamma of the vocabulary; delta is added to
// the green tokens' logits. Here each token is green by its own keyed draw, SipHash(key, seed,
// token) < gamma * 2^64, so under the null hypothesis (text independent of the key) every distinct
// (seed, token) pair is green with probability exactly gamma, independently: the green count of T
// distinct pairs is Binomial(T, gamma) and the p-value is its exact tail.
//   left-hash:  seed = SipHash(key, previous `context` tokens)
//   self-hash:  seed = min over the window (previous context-1 tokens and the candidate itself)
//               of SipHash(key, token), so the candidate's own hash can anchor its green list
//               (Kirchenbauer et al. 2024, "On the Reliability of Watermarks").
// Aaronson (2022; the Gumbel-max form): r_t = SipHash(key, seed, t) / 2^64 is a uniform per token;
// the sampler emits argmax_t r_t^(1/p_t), which is distributed exactly as p. Detection sums
// -ln(1 - r) over distinct (seed, token) pairs: under the null a sum of T Exp(1) variables, whose
// exact tail is Gamma(T, 1).
//
// Every detector scores each distinct (seed, token) pair once: repeated n-grams would otherwise
// count the same coin flip many times and the binomial/gamma null would not hold.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "infer/generator.h"

namespace distill {

enum class WatermarkScheme { kKirchenbauer, kAaronson };
enum class WatermarkSeeding { kLeftHash, kSelfHash };

struct WatermarkKey {
  WatermarkScheme scheme = WatermarkScheme::kKirchenbauer;
  WatermarkSeeding seeding = WatermarkSeeding::kLeftHash;
  double gamma = 0.25;  // Kirchenbauer: green fraction of the vocabulary
  double delta = 2.0;   // Kirchenbauer: logit bias of green tokens
  int context = 1;      // h: tokens the seed depends on (self-hash counts the candidate)
  uint64_t secret[2] = {0, 0};  // the 128-bit SipHash key

  std::string describe() const;  // "kirchenbauer left-hash h=1 gamma=0.25 delta=2"
};

// A key file is JSON: {"scheme": "kirchenbauer"|"aaronson", "seeding": "left-hash"|"self-hash",
// "gamma", "delta", "context", "secret": 32 hex digits}. Errors name the file and the field.
WatermarkKey load_watermark_key(const std::string& path);
// Written atomically with mode 0600 (the secret is the whole security of the scheme).
void save_watermark_key(const WatermarkKey& key, const std::string& path);
// A key with the parameters of `base` and a fresh secret: from the OS (random_device) when
// `seed` is empty, else derived from the seed (calibration runs: reproducible random keys).
WatermarkKey with_new_secret(const WatermarkKey& base, const uint64_t* seed = nullptr);

// SipHash-2-4 of `n` 64-bit words under a 128-bit key.
uint64_t siphash(const uint64_t key[2], const uint64_t* words, size_t n);

// The (seed, token) pair that decides position `pos` of `ids` (the token ids[pos] given
// ids[0..pos-1]) — or `token` instead of ids[pos] when given (a model's prediction at pos).
// Returns false when fewer than the needed previous tokens exist.
struct WatermarkTuple {
  uint64_t seed = 0;
  int32_t token = -1;
  bool operator==(const WatermarkTuple& o) const { return seed == o.seed && token == o.token; }
};
bool watermark_tuple(const WatermarkKey& key, const std::vector<int32_t>& ids, size_t pos,
                     int32_t token, WatermarkTuple* out);

// Kirchenbauer: is the pair green. Aaronson: the pair's uniform r in (0, 1).
bool is_green(const WatermarkKey& key, const WatermarkTuple& t);
double aaronson_r(const WatermarkKey& key, const WatermarkTuple& t);

// The sampler side. `temperature` is the sampling temperature the Aaronson variant draws
// against (the Generator applies temperature after the processor); Kirchenbauer ignores it.
class WatermarkProcessor : public LogitsProcessor {
 public:
  WatermarkProcessor(const WatermarkKey& key, float temperature);
  void process(int request, const std::vector<int32_t>& context, float* logits, int V) override;
  // Also applies to a row the caller has already transformed (serve: after its own sampling
  // filters, at temperature 1).
  void apply(const std::vector<int32_t>& context, float* logits, int V, float temperature);
  const WatermarkKey& key() const { return key_; }

 private:
  WatermarkKey key_;
  float temperature_;
  std::vector<uint64_t> token_hash_;  // self-hash: SipHash(key, token), filled on first use
  std::vector<int32_t> window_;
};

}  // namespace distill
