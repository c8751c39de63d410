// The byte-level tokenizer pretraining uses until the HF tokenizers land: id = byte value,
// vocabulary 256, exact round trip for any byte string.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

struct ByteTokenizer {
  static constexpr int kVocabSize = 256;
  static std::vector<int32_t> encode(std::string_view text) {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); i++) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  static std::string decode(const int32_t* ids, size_t n) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++) s[i] = char(ids[i] & 0xff);
    return s;
  }
  // Identifies the vocabulary in checkpoints and (later) dataset headers.
  // (hex of "distill-bytes-v1": fingerprints are hex strings, as dataset headers store them)
  static constexpr const char* kFingerprint = "64697374696c6c2d62797465732d7631";
};

}  // namespace distill
