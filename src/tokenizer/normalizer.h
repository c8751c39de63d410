// Hugging Face normalizers: the first step of encoding, applied to each stretch of text between
// added tokens (NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace, Strip, StripAccents, ByteLevel,
// Sequence).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace distill {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` in place.
  virtual void normalize(std::string& text) const = 0;
};

// From a tokenizer.json "normalizer" value (not null); `path` is its JSON path, for errors.
std::unique_ptr<Normalizer> normalizer_from_json(const nlohmann::json& j, const std::string& path);

}  // namespace distill
