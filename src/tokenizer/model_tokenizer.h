// The tokenizer that goes with a model directory: its tokenizer.json / tokenizer.model, or, for
// the byte-level models `distill pretrain` writes (weights metadata distill_tokenizer =
// ByteTokenizer::kFingerprint), the byte-level tokenizer.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace distill {

// The byte-level tokenizer behind the Tokenizer interface: id = byte, lossless.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

// Errors name the directory when it has neither tokenizer files nor byte-level metadata.
std::unique_ptr<Tokenizer> open_model_tokenizer(const std::string& model_dir);

}  // namespace distill
