// The vocabulary a GGUF carries (tokenizer.ggml.*), read back and written as the tokenizer files
// of a model directory, so that an imported model keeps its tokenizer:
//  - "gpt2" vocabularies -> tokenizer.json (byte-level BPE: vocab, merges, added tokens, and the
//    pre-tokenizer llama.cpp names in tokenizer.ggml.pre: gpt-2, qwen2 or llama-bpe). No
//    normalizer is written: llama.cpp applies none, and the file must tokenize as llama.cpp does.
//  - "llama" vocabularies -> tokenizer.model (SentencePiece BPE: pieces, scores, types, special
//    ids, byte fallback when the vocabulary has <0xXX> pieces).
// plus tokenizer_config.json (bos/eos tokens, add_bos_token). These are the inverse of
// gguf_export_vocab.h: exporting the directory again embeds the same vocabulary.
#pragma once
#include <string>

#include "formats/gguf.h"
#include "formats/gguf_export_vocab.h"

namespace distill {

// Throws naming the file and key when the vocabulary is missing or malformed.
GgufVocab gguf_vocab_read(const GgufFile& file);

// Writes the files into `dir` (which must exist); returns the tokenizer file's name
// ("tokenizer.json" or "tokenizer.model"). Throws, writing nothing, for a vocabulary that has
// no such file (another tokenizer.ggml.model or tokenizer.ggml.pre).
std::string write_tokenizer_files(const GgufVocab& vocab, const std::string& dir,
                                  int model_max_length);

}  // namespace distill
