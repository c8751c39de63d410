// Byte-level BPE training (GPT-2 style), giving the same vocabulary and merges as Hugging Face
// tokenizers' BpeTrainer with a ByteLevel pre-tokenizer and the full byte alphabet:
//   - text is cut into words by the GPT-2 regex (no prefix space), each line of a file on its own
//     (as tokenizers' train_from_files feeds lines, line endings included), and each word's bytes
//     are written with GPT-2's byte-to-character mapping;
//   - ids: the special tokens first (in the order given), then the 256 byte characters in code
//     point order (GPT-2's own order), then one token per merge;
//   - each step merges the adjacent pair with the highest count (summed over word frequencies);
//     ties go to the pair with the smallest (left id, right id); training stops at vocab_size
//     tokens or when the best count is below min_frequency.
// Pair counts are updated incrementally: a merge touches only the words that hold the pair (a
// pair -> words index) and a lazily corrected max-heap picks the next pair, so a step costs the
// size of the words it changes, not a recount of the corpus.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distill {

struct BpeTrainerOptions {
  int vocab_size = 32000;       // special tokens + 256 bytes + merges
  int64_t min_frequency = 2;    // a pair seen fewer times than this is never merged
  std::vector<std::string> special_tokens = {"<|endoftext|>"};  // ids 0.., in this order
  size_t read_block_bytes = size_t(8) << 20;  // add_file reads whole lines in blocks of this size
};

// What training produces: token texts by id (byte-level characters; special tokens verbatim) and
// the merges in rank order, each as the two token texts it joins.
struct BpeVocabulary {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> special_tokens;  // tokens[0 .. special_tokens.size())
};

// Called now and then with the work done so far and the total.
using BpeProgress = std::function<void(int64_t done, int64_t total)>;

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions options);
  ~BpeTrainer();
  BpeTrainer(const BpeTrainer&) = delete;
  BpeTrainer& operator=(const BpeTrainer&) = delete;

  // Counts the words of one text sequence (cut as a whole, not by lines). Throws on invalid
  // UTF-8, naming `source`.
  void add_text(std::string_view text, const std::string& source = "text");
  // Counts the words of each line of a UTF-8 text file (multi-threaded); `progress` gets bytes.
  // Errors name the file and line.
  void add_file(const std::string& path, const BpeProgress& progress = {});

  int64_t words_seen() const;    // word occurrences counted so far
  int64_t unique_words() const;  // distinct words

  // Runs the merges; `progress` gets merges done out of the merges wanted.
  BpeVocabulary train(const BpeProgress& progress = {}) const;

  struct Counts;

 private:
  BpeTrainerOptions options_;
  std::unique_ptr<Counts> counts_;
};

// tokenizer.json (Hugging Face tokenizers: BPE model, ByteLevel pre-tokenizer without prefix
// space and with the GPT-2 regex, ByteLevel decoder and post-processor, the special tokens as
// added tokens) and a tokenizer_config.json for transformers (the first special token as BOS,
// EOS and UNK).
std::string bpe_tokenizer_json(const BpeVocabulary& vocab);
std::string bpe_tokenizer_config_json(const BpeVocabulary& vocab);
// Writes both into `dir` (created if missing).
void save_bpe_tokenizer(const BpeVocabulary& vocab, const std::string& dir);

}  // namespace distill
