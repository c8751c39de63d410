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

std::vector<std::string> model_tokenizer_files(const std::string& path) {
  namespace fs = std::filesystem;
  const bool dir = fs::is_directory(path);
  const fs::path base = dir ? fs::path(path) : fs::path(path).parent_path();
  std::vector<std::string> files;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path f = base / name;
    const bool chosen = dir || fs::path(path).filename() == name;
    if (chosen && fs::is_regular_file(f)) files.push_back(f.string());
  }
  if (files.empty()) return files;  // a byte-level model, or not a tokenizer
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"})
    if (fs::is_regular_file(base / name)) files.push_back((base / name).string());
  return files;
}

}  // namespace distill
