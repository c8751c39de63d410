// Added tokens (HF "added_tokens", GGUF control and user-defined tokens): strings matched in the
// text before normalization and pre-tokenization and turned into one id each. Special tokens
// match only when the caller asks (EncodeOptions::parse_special); the others always match, as
// in HF tokenizers with split_special_tokens and in llama.cpp.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace distill {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;  // match only when not inside a word
  bool lstrip = false;       // the match takes the whitespace before it
  bool rstrip = false;       // the match takes the whitespace after it
  bool normalized = false;   // matched in normalized text (its content normalized too)
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) normalizes the content of tokens with normalized=true.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // A stretch of text [begin, end) to tokenize (id < 0) or an added token (id >= 0).
  struct Piece {
    uint32_t begin = 0;
    uint32_t end = 0;
    int32_t id = -1;
  };
  // Cuts `text` at the leftmost-longest matches of the raw (normalized=false) tokens, or of the
  // normalized ones when `normalized_tokens`. Appends to `out`; empty text pieces are left out.
  void split(std::string_view text, bool parse_special, bool normalized_tokens,
             std::vector<Piece>& out) const;

  bool empty() const { return tokens_.empty(); }
  bool has_normalized_tokens() const { return !groups_[1].order.empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find(int32_t id) const;
  std::optional<int32_t> find(std::string_view content) const;

 private:
  struct Group {
    std::vector<uint32_t> order;  // token indices by first byte, longest content first
    std::array<uint32_t, 257> first_byte_start{};  // order[start[b], start[b+1]) begin with b
    std::vector<std::string> contents;  // what is matched, per token index (maybe normalized)
    bool any_plain = false;  // some member is not special (matched even without parse_special)
  };
  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, uint32_t> by_id_;        // id -> index in tokens_
  std::unordered_map<std::string, uint32_t> by_content_;  // content -> index (first wins)
  Group groups_[2];  // [0]: matched on raw text, [1]: on normalized text
};

}  // namespace distill
