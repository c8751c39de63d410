#include "tokenizer/byte_tokenizer_adapter.h"

#include <filesystem>

#include "core/error.h"
#include "formats/safetensors.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill {

std::vector<int32_t> ByteLevelTokenizer::encode(std::string_view text, const EncodeOptions&) const {
  return ByteTokenizer::encode(text);
}

std::string ByteLevelTokenizer::decode(const std::vector<int32_t>& ids, bool) const {
  for (int32_t id : ids)
    if (id < 0 || id >= ByteTokenizer::kVocabSize)
      throw Error("byte-level tokenizer: id {} is outside the vocabulary of 256", id);
  return ByteTokenizer::decode(ids.data(), ids.size());
}

int ByteLevelTokenizer::vocab_size() const { return ByteTokenizer::kVocabSize; }

std::string ByteLevelTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= ByteTokenizer::kVocabSize)
    throw Error("byte-level tokenizer: id {} is outside the vocabulary of 256", id);
  return std::string(1, char(id));
}

std::optional<int32_t> ByteLevelTokenizer::token_id(std::string_view text) const {
  if (text.size() != 1) return std::nullopt;
  return int32_t(static_cast<unsigned char>(text[0]));
}

std::string ByteLevelTokenizer::fingerprint() const { return ByteTokenizer::kFingerprint; }

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "tokenizer.json") || fs::exists(fs::path(dir) / "tokenizer.model"))
    return load_tokenizer(dir);
  const SafetensorsModel weights = SafetensorsModel::open(dir);
  const auto& meta = weights.metadata();
  const auto it = meta.find("distill_tokenizer");
  // Early checkpoints wrote the name itself; later ones write ByteTokenizer::kFingerprint.
  if (it != meta.end() &&
      (it->second == ByteTokenizer::kFingerprint || it->second == kByteTokenizerName))
    return std::make_unique<ByteLevelTokenizer>();
  if (it != meta.end())
    throw Error(
        "{}: no tokenizer.json or tokenizer.model, and its weights name an unknown "
        "tokenizer '{}' (expected {})",
        dir, it->second, kByteTokenizerName);
  throw Error(
      "{}: no tokenizer.json or tokenizer.model, and its weights do not say they are "
      "byte-level (safetensors metadata distill_tokenizer = {})",
      dir, kByteTokenizerName);
}

}  // namespace distill
