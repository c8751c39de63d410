// Hugging Face decoders: turn the token strings of ids back into text (ByteLevel, Metaspace,
// ByteFallback, Fuse, Strip, Replace, BPEDecoder, Sequence). Unlike HF, bytes that do not form
// valid UTF-8 (ids that split a character) are returned as they are, not as U+FFFD.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the list of token strings (some decoders join them into one).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> make_byte_level_decoder();

// From a tokenizer.json "decoder" value (not null); `path` is its JSON path, for errors.
std::unique_ptr<Decoder> decoder_from_json(const nlohmann::json& j, const std::string& path);

}  // namespace distill
