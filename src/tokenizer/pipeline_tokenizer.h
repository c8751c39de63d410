// A BPE tokenizer assembled from Hugging Face's stages: added tokens → normalizer →
// pre-tokenizer → BPE model → special-token template, and back through the decoder. Built from
// a tokenizer.json (hf_tokenizer.h) or from a GGUF "gpt2" vocabulary (gguf_vocab.h).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace distill {

struct PipelineParts {
  std::string kind;                              // "hf-bpe", "gguf-gpt2"
  std::unique_ptr<Normalizer> normalizer;        // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;   // may be null: the whole text is one word
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  SpecialTemplate special_template;              // ids around the text when add_special_tokens
  std::unique_ptr<Decoder> decoder;              // may be null: tokens joined with spaces (HF)
  // Added tokens decode to their content as is (llama.cpp) rather than through the decoder (HF).
  bool added_tokens_skip_decoder = false;
  std::optional<int32_t> bos, eos;
  std::string fingerprint;                       // computed by the builder from its source
};

class PipelineTokenizer final : public Tokenizer {
 public:
  explicit PipelineTokenizer(PipelineParts parts);

  std::vector<int32_t> encode(std::string_view text,
                              const EncodeOptions& options = {}) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override { return vocab_size_; }
  std::string token_text(int32_t id) const override;
  std::optional<int32_t> token_id(std::string_view text) const override;
  std::optional<int32_t> bos_id() const override { return parts_.bos; }
  std::optional<int32_t> eos_id() const override { return parts_.eos; }
  bool is_special(int32_t id) const override;
  std::string fingerprint() const override { return parts_.fingerprint; }
  std::string kind() const override { return parts_.kind; }

  const BpeModel& model() const { return *parts_.model; }

 private:
  void encode_text(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
  void encode_words(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;

  PipelineParts parts_;
  AddedVocabulary added_;
  int vocab_size_ = 0;
  std::vector<int8_t> added_kind_;  // per id: 0 model token, 1 added, 2 added and special
};

}  // namespace distill
