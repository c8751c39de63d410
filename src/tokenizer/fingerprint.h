// Tokenizer fingerprints: SHA-256 (FIPS 180-4) over a canonical serialization of everything that
// decides the ids. Fields are length-prefixed, so ("ab","c") and ("a","bc") differ.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace distill {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> digest();  // finishes the hash; call once
  static std::string hex(const std::array<uint8_t, 32>& digest);

 private:
  void block(const uint8_t* p);
  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

class FingerprintBuilder {
 public:
  FingerprintBuilder& add(std::string_view field);
  FingerprintBuilder& add(int64_t value);
  // Lowercase hex of the SHA-256 (64 characters).
  std::string hex();

 private:
  Sha256 sha_;
};

}  // namespace distill
