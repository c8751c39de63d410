// The tokenizer interface every vocabulary format implements: Hugging Face tokenizer.json
// (tokenizer/hf_tokenizer.*), SentencePiece .model (tokenizer/spm_tokenizer.*), the vocabularies
// embedded in GGUF files (tokenizer/gguf_vocab.*), and the byte-level tokenizer of pretraining.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

struct EncodeOptions {
  // Add the post-processor's template tokens (e.g. BOS), as HF add_special_tokens=True.
  bool add_special_tokens = false;
  // Recognise special/added tokens written in the text (e.g. "<|im_start|>") as single ids.
  // Off by default: text is text, and cannot inject control tokens.
  bool parse_special = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text,
                                      const EncodeOptions& options = {}) const = 0;
  // encode() of each text, spread over the OpenMP threads (omp_get_max_threads()); the result
  // does not depend on the thread count. encode() is thread-safe, so this is only a convenience.
  virtual std::vector<std::vector<int32_t>> encode_batch(
      const std::vector<std::string_view>& texts, const EncodeOptions& options = {}) const;
  // Concatenated text of the ids (with the decoder applied); special tokens are skipped when
  // skip_special. Ids that split a UTF-8 character give its bytes as they are (tokenizer.json and
  // GGUF vocabularies; libsentencepiece shows U+FFFD instead). Throws for ids out of range.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  virtual int vocab_size() const = 0;  // ids are in [0, vocab_size)
  // The vocabulary entry of an id as stored (e.g. "Ġthe", "▁the", "<0x0A>"); throws if out of range.
  virtual std::string token_text(int32_t id) const = 0;
  virtual std::optional<int32_t> token_id(std::string_view token_text) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // A stable identifier of everything that decides the ids (vocabulary, merges, normalization,
  // pre-tokenization, added tokens): two tokenizers with the same fingerprint give the same ids.
  // Datasets record it; teacher and student must agree on it. Hex string.
  virtual std::string fingerprint() const = 0;
  // "hf-bpe", "sentencepiece", "gguf-gpt2", "gguf-llama", "bytes", ...
  virtual std::string kind() const = 0;
};

// Opens a tokenizer.json, a SentencePiece .model, a .gguf file, or a model directory (which has
// tokenizer.json or tokenizer.model). Errors name the path and what was expected.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace distill
