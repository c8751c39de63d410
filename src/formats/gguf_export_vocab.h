// The vocabulary an exported GGUF carries (tokenizer.ggml.* keys), built the way llama.cpp's
// convert_hf_to_gguf.py builds it, from one of:
//  - distill's byte-level tokenizer (vocab 256, id = byte): tokenizer.ggml.model "gpt2" with the
//    256 tokens in GPT-2's byte-to-unicode spelling and no merges. llama.cpp's BPE tokenizer then
//    maps every byte of a pre-token to the token spelling that byte, i.e. id = byte, for any
//    valid UTF-8 text (invalid UTF-8 is replaced by llama.cpp's pre-tokenizer before lookup).
//  - a Hugging Face tokenizer.json: byte-level BPE (GPT-2, Qwen, Llama 3: model "gpt2", merges,
//    tokenizer.ggml.pre recognised from the pre-tokenizer regex) or SentencePiece-style BPE with
//    byte fallback (Mistral, Llama 2 exports: model "llama", scores from merge ranks).
//  - a SentencePiece tokenizer.model of type BPE: model "llama", pieces, scores and types as stored.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/gguf.h"

namespace distill {

// llama.cpp's token types (llama.h LLAMA_TOKEN_TYPE_*; SentencePiece uses the same numbers).
enum class GgufTokenType : int32_t {
  Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct GgufVocab {
  std::string model;                // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;                  // tokenizer.ggml.pre ("gpt2" model only)
  std::vector<std::string> tokens;  // id -> token text as the vocabulary spells it
  std::vector<float> scores;        // "llama" model only (empty otherwise)
  std::vector<int32_t> types;       // GgufTokenType per id
  std::vector<std::string> merges;  // "gpt2" model: "left right", in rank order
  int bos = -1, eos = -1, unk = -1, pad = -1;  // -1: not written
  std::optional<bool> add_bos, add_eos, add_space_prefix, remove_extra_whitespaces;
  std::string source;               // "bytes" or the file it came from (for messages)
};

// The byte-level vocabulary described above.
GgufVocab gguf_vocab_bytes();
// From a tokenizer.json, a tokenizer.model, or a directory holding one (tokenizer.json wins).
// A tokenizer_config.json beside it supplies bos/eos and add_bos/add_eos when present. Errors
// name the file and what is not supported.
GgufVocab gguf_vocab_from_file(const std::string& path);
// Appends "[PAD<id>]" tokens of type Unused up to `n` (a model's vocab_size may exceed its
// tokenizer's, as llama.cpp's converter pads); throws when the vocabulary has more than `n`.
void gguf_vocab_pad(GgufVocab& vocab, int n);
// Writes the tokenizer.ggml.* keys.
void gguf_vocab_write(GgufWriter& writer, const GgufVocab& vocab);

// GPT-2's reversible byte -> printable-unicode mapping (UTF-8 encoded), as used by byte-level
// BPE vocabularies: bytes 33-126, 161-172 and 174-255 map to themselves, the rest to U+0100...
std::string gpt2_byte_to_unicode(uint8_t byte);

}  // namespace distill
