#include "forensics/watermark.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"

namespace distill {

namespace {

// Domain tags keep the hash inputs of different roles apart.
constexpr uint64_t kTagLeft = 1, kTagToken = 2, kTagGreen = 3, kTagGumbel = 4;

inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

inline void sip_round(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
  v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
  v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
  v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
}

const char* scheme_name(WatermarkScheme s) {
  return s == WatermarkScheme::kKirchenbauer ? "kirchenbauer" : "aaronson";
}
const char* seeding_name(WatermarkSeeding s) {
  return s == WatermarkSeeding::kLeftHash ? "left-hash" : "self-hash";
}

uint64_t green_threshold(double gamma) {
  if (gamma >= 1.0) return std::numeric_limits<uint64_t>::max();
  return gamma <= 0.0 ? 0 : uint64_t(std::ldexp(gamma, 64));
}

void check_key(const WatermarkKey& k, const std::string& where) {
  if (!(k.gamma > 0.0 && k.gamma < 1.0))
    throw Error("{}: gamma must be in (0, 1), got {}", where, k.gamma);
  if (!(k.delta >= 0.0) || !std::isfinite(k.delta))
    throw Error("{}: delta must be a finite number >= 0, got {}", where, k.delta);
  if (k.context < 1 || k.context > 64)
    throw Error("{}: context must be in 1..64 tokens, got {}", where, k.context);
  if (k.seeding == WatermarkSeeding::kSelfHash && k.context < 2)
    throw Error("{}: self-hash seeding needs context >= 2 (with 1 the green list would depend on "
                "the candidate token alone)", where);
}

}  // namespace

uint64_t siphash(const uint64_t key[2], const uint64_t* words, size_t n) {
  uint64_t v0 = key[0] ^ 0x736f6d6570736575ull, v1 = key[1] ^ 0x646f72616e646f6dull;
  uint64_t v2 = key[0] ^ 0x6c7967656e657261ull, v3 = key[1] ^ 0x7465646279746573ull;
  for (size_t i = 0; i < n; i++) {
    v3 ^= words[i];
    sip_round(v0, v1, v2, v3);
    sip_round(v0, v1, v2, v3);
    v0 ^= words[i];
  }
  const uint64_t b = uint64_t(n * 8) << 56;  // the message is whole words: no tail bytes
  v3 ^= b;
  sip_round(v0, v1, v2, v3);
  sip_round(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; i++) sip_round(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

std::string WatermarkKey::describe() const {
  if (scheme == WatermarkScheme::kAaronson)
    return fmt::format("aaronson {} h={}", seeding_name(seeding), context);
  return fmt::format("kirchenbauer {} h={} gamma={} delta={}", seeding_name(seeding), context,
                     gamma, delta);
}

WatermarkKey load_watermark_key(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot open watermark key file", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("{}: not a JSON watermark key: {}", path, e.what());
  }
  if (!j.is_object()) throw Error("{}: a watermark key is a JSON object", path);
  static const char* known[] = {"scheme", "seeding", "gamma", "delta", "context", "secret"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find_if(std::begin(known), std::end(known),
                     [&](const char* k) { return it.key() == k; }) == std::end(known))
      throw Error("{}: unknown watermark key field \"{}\"", path, it.key());
  WatermarkKey k;
  try {
    const std::string scheme = j.value("scheme", "kirchenbauer");
    if (scheme == "kirchenbauer") k.scheme = WatermarkScheme::kKirchenbauer;
    else if (scheme == "aaronson") k.scheme = WatermarkScheme::kAaronson;
    else throw Error("{}: \"scheme\" must be kirchenbauer or aaronson, got \"{}\"", path, scheme);
    const std::string seeding = j.value("seeding", "left-hash");
    if (seeding == "left-hash") k.seeding = WatermarkSeeding::kLeftHash;
    else if (seeding == "self-hash") k.seeding = WatermarkSeeding::kSelfHash;
    else throw Error("{}: \"seeding\" must be left-hash or self-hash, got \"{}\"", path, seeding);
    k.gamma = j.value("gamma", k.gamma);
    k.delta = j.value("delta", k.delta);
    k.context = j.value("context", k.context);
    if (!j.contains("secret") || !j["secret"].is_string())
      throw Error("{}: \"secret\" (32 hex digits) is missing", path);
    const std::string s = j["secret"];
    if (s.size() != 32 || s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      throw Error("{}: \"secret\" must be 32 hex digits", path);
    k.secret[0] = std::stoull(s.substr(0, 16), nullptr, 16);
    k.secret[1] = std::stoull(s.substr(16), nullptr, 16);
  } catch (const nlohmann::json::exception& e) {
    throw Error("{}: a watermark key field has the wrong type: {}", path, e.what());
  }
  check_key(k, path);
  return k;
}

void save_watermark_key(const WatermarkKey& k, const std::string& path) {
  check_key(k, path);
  nlohmann::json j = {{"scheme", scheme_name(k.scheme)}, {"seeding", seeding_name(k.seeding)},
                      {"gamma", k.gamma},   {"delta", k.delta},
                      {"context", k.context},
                      {"secret", fmt::format("{:016x}{:016x}", k.secret[0], k.secret[1])}};
  write_file_atomic(path, j.dump(1) + "\n");
  ::chmod(path.c_str(), 0600);
}

WatermarkKey with_new_secret(const WatermarkKey& base, const uint64_t* seed) {
  WatermarkKey k = base;
  if (seed) {
    Rng rng(*seed);
    k.secret[0] = rng.next();
    k.secret[1] = rng.next();
  } else {
    std::random_device dev;
    for (uint64_t& w : k.secret) w = (uint64_t(dev()) << 32) ^ uint64_t(dev());
  }
  return k;
}

bool watermark_tuple(const WatermarkKey& key, const std::vector<int32_t>& ids, size_t pos,
                     int32_t token, WatermarkTuple* out) {
  const size_t h = size_t(key.context);
  const int32_t tok = token >= 0 ? token : ids.at(pos);
  if (key.seeding == WatermarkSeeding::kLeftHash) {
    if (pos < h) return false;
    uint64_t words[65];
    words[0] = kTagLeft;
    for (size_t i = 0; i < h; i++) words[1 + i] = uint64_t(uint32_t(ids[pos - h + i]));
    out->seed = siphash(key.secret, words, h + 1);
  } else {
    if (pos + 1 < h) return false;
    uint64_t w[2] = {kTagToken, uint64_t(uint32_t(tok))};
    uint64_t m = siphash(key.secret, w, 2);
    for (size_t i = pos + 1 - h; i < pos; i++) {
      w[1] = uint64_t(uint32_t(ids[i]));
      m = std::min(m, siphash(key.secret, w, 2));
    }
    out->seed = m;
  }
  out->token = tok;
  return true;
}

bool is_green(const WatermarkKey& key, const WatermarkTuple& t) {
  const uint64_t w[3] = {kTagGreen, t.seed, uint64_t(uint32_t(t.token))};
  return siphash(key.secret, w, 3) < green_threshold(key.gamma);
}

double aaronson_r(const WatermarkKey& key, const WatermarkTuple& t) {
  const uint64_t w[3] = {kTagGumbel, t.seed, uint64_t(uint32_t(t.token))};
  return (double(siphash(key.secret, w, 3) >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
}

WatermarkProcessor::WatermarkProcessor(const WatermarkKey& key, float temperature)
    : key_(key), temperature_(temperature) {
  check_key(key_, "watermark key");
}

void WatermarkProcessor::process(int, const std::vector<int32_t>& context, float* logits, int V) {
  apply(context, logits, V, temperature_);
}

void WatermarkProcessor::apply(const std::vector<int32_t>& context, float* logits, int V,
                               float temperature) {
  const size_t h = size_t(key_.context);
  const bool self = key_.seeding == WatermarkSeeding::kSelfHash;
  if (context.size() < (self ? h - 1 : h)) return;  // too early: detectors skip these too
  // The seed of every candidate: one for left-hash, per candidate for self-hash.
  uint64_t left_seed = 0, window_min = std::numeric_limits<uint64_t>::max();
  if (!self) {
    WatermarkTuple t;
    watermark_tuple(key_, context, context.size(), 0, &t);
    left_seed = t.seed;
  } else {
    if (int(token_hash_.size()) != V) {
      token_hash_.resize(size_t(V));
      for (int v = 0; v < V; v++) {
        const uint64_t w[2] = {kTagToken, uint64_t(uint32_t(v))};
        token_hash_[size_t(v)] = siphash(key_.secret, w, 2);
      }
    }
    for (size_t i = context.size() + 1 - h; i < context.size(); i++) {
      const int32_t id = context[i];
      const uint64_t hv = id >= 0 && id < V ? token_hash_[size_t(id)] : 0;
      window_min = std::min(window_min, hv);
    }
  }
  auto seed_of = [&](int v) {
    return self ? std::min(window_min, token_hash_[size_t(v)]) : left_seed;
  };
  if (key_.scheme == WatermarkScheme::kKirchenbauer) {
    const float delta = float(key_.delta);
    for (int v = 0; v < V; v++)
      if (is_green(key_, {seed_of(v), v})) logits[v] += delta;
    return;
  }
  // Aaronson: argmax over tokens of ln(r) / p, with p the sampling distribution at this
  // temperature. Greedy decoding (temperature 0) has no randomness to replace: left as is.
  if (temperature <= 0.0f) return;
  float top = -std::numeric_limits<float>::infinity();
  for (int v = 0; v < V; v++) top = std::max(top, logits[v]);
  double z = 0.0;
  for (int v = 0; v < V; v++) z += std::exp(double(logits[v] - top) / temperature);
  int best = 0;
  double best_score = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < V; v++) {
    const double p = std::exp(double(logits[v] - top) / temperature) / z;
    if (p <= 0.0) continue;
    const double score = std::log(aaronson_r(key_, {seed_of(v), v})) / p;
    if (score > best_score) {
      best_score = score;
      best = v;
    }
  }
  for (int v = 0; v < V; v++)
    logits[v] = v == best ? 0.0f : -std::numeric_limits<float>::infinity();
}

}  // namespace distill
