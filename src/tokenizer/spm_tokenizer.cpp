#include "tokenizer/spm_tokenizer.h"

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/fingerprint.h"

namespace distill {
namespace {

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(const std::string& path) : path_(path) {
    const std::string bytes = read_file_text(path);
    sentencepiece::util::Status status;
    try {
      status = processor_.LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {  // its trie builder throws on, e.g., an empty piece
      throw Error("{}: not a valid SentencePiece model: {}", path, e.what());
    }
    if (!status.ok())
      throw Error("{}: not a SentencePiece model: {}", path, status.ToString());
    // Control pieces (<s>, </s>, ...) are recognised in text only with parse_special;
    // SentencePiece itself always treats them as text.
    std::vector<AddedToken> controls;
    for (int id = 0; id < processor_.GetPieceSize(); id++)
      if (processor_.IsControl(id) && !processor_.IdToPiece(id).empty())
        controls.push_back({id, processor_.IdToPiece(id), true, false, false, false, false});
    controls_ = AddedVocabulary(std::move(controls), nullptr);
    fingerprint_ = FingerprintBuilder()
                       .add("distill-tokenizer/sentencepiece/v1")
                       .add(processor_.serialized_model_proto())
                       .hex();
  }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> ids;
    if (options.add_special_tokens && processor_.bos_id() >= 0) ids.push_back(processor_.bos_id());
    auto encode_text = [&](std::string_view piece) {
      std::vector<int> out;
      auto status = processor_.Encode(piece, &out);
      if (!status.ok()) throw Error("{}: encode failed: {}", path_, status.ToString());
      ids.insert(ids.end(), out.begin(), out.end());
    };
    if (!options.parse_special) {
      encode_text(text);
    } else {
      std::vector<AddedVocabulary::Piece> pieces;
      controls_.split(text, true, false, pieces);
      for (const auto& p : pieces) {
        if (p.id >= 0) ids.push_back(p.id);
        else encode_text(text.substr(p.begin, p.end - p.begin));
      }
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string text;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string piece;
      auto status = processor_.Decode(run, &piece);
      if (!status.ok()) throw Error("{}: decode failed: {}", path_, status.ToString());
      text += piece;
      run.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= processor_.GetPieceSize())
        throw Error("decode: id {} is outside the vocabulary [0, {})", id,
                    processor_.GetPieceSize());
      if (processor_.IsControl(id)) {
        if (skip_special) continue;
        flush();
        text += processor_.IdToPiece(id);
      } else if (processor_.IsUnknown(id) && skip_special) {
        continue;
      } else {
        run.push_back(id);
      }
    }
    flush();
    return text;
  }

  int vocab_size() const override { return processor_.GetPieceSize(); }
  std::string token_text(int32_t id) const override {
    if (id < 0 || id >= processor_.GetPieceSize())
      throw Error("token_text: id {} is outside the vocabulary [0, {})", id,
                  processor_.GetPieceSize());
    return processor_.IdToPiece(id);
  }
  std::optional<int32_t> token_id(std::string_view text) const override {
    int id = processor_.PieceToId(text);  // the unk id when absent
    if (id < 0 || processor_.IdToPiece(id) != text) return std::nullopt;
    return id;
  }
  std::optional<int32_t> bos_id() const override {
    return processor_.bos_id() >= 0 ? std::optional<int32_t>(processor_.bos_id()) : std::nullopt;
  }
  std::optional<int32_t> eos_id() const override {
    return processor_.eos_id() >= 0 ? std::optional<int32_t>(processor_.eos_id()) : std::nullopt;
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < processor_.GetPieceSize() &&
           (processor_.IsControl(id) || processor_.IsUnknown(id));
  }
  std::string fingerprint() const override { return fingerprint_; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
  AddedVocabulary controls_;
  std::string fingerprint_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_spm_tokenizer(const std::string& path) {
  return std::make_unique<SpmTokenizer>(path);
}

}  // namespace distill
