// SentencePiece .model files (BPE and Unigram, e.g. Llama 2, ALBERT) through libsentencepiece.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace distill {

// Throws distill::Error naming `path` when it is not a SentencePiece model.
std::unique_ptr<Tokenizer> load_spm_tokenizer(const std::string& path);

}  // namespace distill
