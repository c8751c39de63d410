// The byte-level tokenizer of pretraining (tokenizer/byte_tokenizer.h) behind the Tokenizer
// interface, so code written for any vocabulary (eval, generation) runs the byte-level demo
// models too; and the choice of tokenizer for a model directory.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace distill {

// id = byte value, vocabulary 256, no special tokens (no BOS/EOS), exact round trip.
// token_text(id) is the byte itself as a one-character string.
class ByteLevelTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text,
                              const EncodeOptions& options = {}) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override;
  std::string token_text(int32_t id) const override;
  std::optional<int32_t> token_id(std::string_view token_text) const override;
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  bool is_special(int32_t) const override { return false; }
  std::string fingerprint() const override;  // ByteTokenizer::kFingerprint
  std::string kind() const override { return "bytes"; }
};

// The byte-level vocabulary's name, as early checkpoints' metadata recorded it.
constexpr const char* kByteTokenizerName = "distill-bytes-v1";

// The tokenizer of a model directory: its tokenizer.json / tokenizer.model (load_tokenizer)
// when it has one; otherwise ByteLevelTokenizer when its weights' safetensors metadata says
// "distill_tokenizer": "distill-bytes-v1" or ByteTokenizer::kFingerprint (what `distill
// pretrain` and `distill train` write). Anything else is an error naming the directory.
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& dir);

// The tokenizer files a model trained with the tokenizer at `path` carries: tokenizer.json and
// tokenizer.model (a directory: those it holds; a file: itself, when it has one of these names),
// with the tokenizer_config.json and special_tokens_map.json beside them. Empty for anything
// else, e.g. a byte-level model directory.
std::vector<std::string> model_tokenizer_files(const std::string& path);

}  // namespace distill
