// SentencePiece-style vocabularies embedded in GGUF files (tokenizer.ggml.model "llama": Llama 2,
// Phi-3, Mistral exports), tokenized the way llama.cpp does: spaces become "▁" (with one
// prepended per add_space_prefix), then adjacent symbols merge, highest-scoring merged piece
// first, and characters with no piece fall back to "<0xXX>" byte tokens.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace distill {

// llama.cpp's token types (SentencePiece uses the same numbers).
enum class VocabTokenType : int32_t {
  Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct SpmVocab {
  std::vector<std::string> tokens;        // by id
  std::vector<float> scores;              // by id
  std::vector<VocabTokenType> types;      // by id
  std::optional<int32_t> bos, eos, unk;
  bool add_bos = true;                    // with add_special_tokens
  bool add_eos = false;
  bool add_space_prefix = true;           // " " before the text (and after each added token)
  std::string fingerprint;
};

std::unique_ptr<Tokenizer> make_gguf_spm_tokenizer(SpmVocab vocab);

}  // namespace distill
