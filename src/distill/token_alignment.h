// Where each token of a tokenization starts in the text, in bytes, and the pairing of two
// tokenizations of one text by those offsets (cross-tokenizer distillation, distill/uld.h).
//
// Offsets come from the tokens' own bytes: for byte-level BPE (GPT-2 style) and the byte
// tokenizer, the concatenated decode of each token equals the text, so token i starts where the
// bytes of tokens 0..i-1 end. Tokenizers for which that does not hold (SentencePiece's "▁" and
// normalizers that change the text) are refused rather than misaligned.
//
// A model's position i reads tokens 0..i and predicts token i+1, which starts at byte
// starts[i+1]: two positions (one per tokenization) see the same text prefix exactly when the
// next tokens start at the same byte, and only such pairs are compared.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "distill/uld.h"

namespace distill {

class Tokenizer;

// Each id's bytes (decode of that id alone); "" for special tokens, which never occur in text
// encoded without parse_special.
std::vector<std::string> vocabulary_bytes(const Tokenizer& tokenizer);

// A text's ids and byte offsets: starts[i] is where token i begins, starts[size()] the text's end.
struct TokenizedText {
  std::vector<int32_t> ids;
  std::vector<int64_t> starts;
  size_t size() const { return ids.size(); }
  // Appends `other`, whose offsets are relative to a text that follows this one's (moved in
  // whole when this is empty: a corpus's arrays are never held twice).
  void append(TokenizedText&& other);
};

// Encodes `text` (no special tokens) and computes the offsets from `token_bytes`
// (vocabulary_bytes of the same tokenizer). Throws, naming `what` (the tokenizer), when the
// tokens' bytes do not concatenate to the text.
TokenizedText tokenize_with_offsets(const Tokenizer& tokenizer,
                                    const std::vector<std::string>& token_bytes,
                                    std::string_view text, const std::string& what);

// Pairs of positions whose next tokens start at the same byte. student_next (Ns) and
// teacher_next (Nt): per position, the byte offset where its next token starts (increasing;
// negative: the position predicts nothing and is never paired). Rows are position + offset.
std::vector<AlignedRow> align_by_next_token_start(const int64_t* student_next, int Ns,
                                                  int32_t student_row0,
                                                  const int64_t* teacher_next, int Nt,
                                                  int32_t teacher_row0);

}  // namespace distill
