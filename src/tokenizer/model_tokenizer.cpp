#include "tokenizer/model_tokenizer.h"

#include <filesystem>

#include "core/error.h"
#include "formats/safetensors.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill {
namespace {

class BytesTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions&) const override {
    return ByteTokenizer::encode(text);
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    return ByteTokenizer::decode(ids.data(), ids.size());
  }
  int vocab_size() const override { return ByteTokenizer::kVocabSize; }
  std::string token_text(int32_t id) const override {
    if (id < 0 || id >= ByteTokenizer::kVocabSize)
      throw Error("token id {} is outside the byte vocabulary [0, 256)", id);
    return std::string(1, char(id));
  }
  std::optional<int32_t> token_id(std::string_view text) const override {
    if (text.size() != 1) return std::nullopt;
    return int32_t(static_cast<unsigned char>(text[0]));
  }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  bool is_special(int32_t) const override { return false; }
  std::string fingerprint() const override { return ByteTokenizer::kFingerprint; }
  std::string kind() const override { return "bytes"; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<BytesTokenizer>(); }

std::unique_ptr<Tokenizer> open_model_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "tokenizer.json") || fs::exists(fs::path(dir) / "tokenizer.model"))
    return load_tokenizer(dir);
  const SafetensorsModel weights = SafetensorsModel::open(dir);
  auto it = weights.metadata().find("distill_tokenizer");
  if (it != weights.metadata().end() && it->second == ByteTokenizer::kFingerprint)
    return make_byte_tokenizer();
  throw Error("{}: no tokenizer.json or tokenizer.model, and the weights do not say they are "
              "byte-level (metadata distill_tokenizer)", dir);
}

}  // namespace distill
