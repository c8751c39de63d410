// Tokenizers from the vocabulary a GGUF file embeds (tokenizer.ggml.* metadata):
//  - "gpt2": byte-level BPE from tokens + merges, pre-tokenized by the regexes llama.cpp uses for
//    tokenizer.ggml.pre (gpt-2, llama-bpe, qwen2, falcon, starcoder, deepseek-llm, ...);
//  - "llama": SentencePiece-style pieces with scores (gguf_spm.h).
// Token types, bos/eos/unk ids and add_bos/add_eos come from the file as llama.cpp reads them.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

namespace distill {

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> gguf_tokenizer_from(const GgufFile& file);

// The pre-tokenizer regexes (applied in order, each isolating its matches) for a
// tokenizer.ggml.pre name; throws naming the supported names when it is unknown.
std::vector<std::string> gguf_pre_regexes(const std::string& pre);

}  // namespace distill
