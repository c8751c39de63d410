// A prompt sketch: the prompt's words as 32-bit hashes, in order (the first kSketchWords), which
// `distill serve` stores per request so an audit can compare queries (PRADA distances, MMD,
// shared templates) without keeping the prompt text. A word is a maximal run of ASCII letters and
// digits (any byte >= 0x80 also counts as a letter, so UTF-8 words stay whole), lowercased.
// The hashes are unkeyed: a dictionary attack recovers common words, so treat the sketch as
// sensitive as the prompt's vocabulary (docs/audit.md).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

constexpr size_t kSketchWords = 96;

// FNV-1a of the lowercased word.
uint32_t sketch_word_hash(std::string_view word);

// The first kSketchWords words of `text`, hashed.
std::vector<uint32_t> prompt_sketch(std::string_view text);

// Little-endian bytes for the usage store's BLOB column, and back (a blob whose size is not a
// multiple of 4 is an error naming `what`).
std::string sketch_to_blob(const std::vector<uint32_t>& sketch);
std::vector<uint32_t> sketch_from_blob(std::string_view blob, const std::string& what);

}  // namespace distill
