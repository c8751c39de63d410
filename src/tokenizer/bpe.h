// Byte-pair encoding model (HF tokenizers' BPE, llama.cpp's gpt2 vocabularies): a word starts as
// one symbol per character (or per byte) and the adjacent pair with the lowest merge rank is
// merged, leftmost first on ties, until no pair has a merge.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace distill {

class WordCache;

// Lets unordered_map<std::string, ...> be searched with a string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

struct BpeConfig {
  // Words arrive as raw bytes and the vocabulary is written in GPT-2's byte-level characters
  // (byte_level.h): symbols start as single bytes, and the pre-tokenizer skips the mapping.
  bool byte_level = false;
  // A character with no token becomes its UTF-8 bytes as "<0xXX>" tokens (SentencePiece style).
  bool byte_fallback = false;
  std::optional<std::string> unk_token;  // for characters with no token (else they are dropped)
  bool fuse_unk = false;                 // consecutive unknown characters share one unk
  bool ignore_merges = false;            // a word that is itself a token is that token
  std::string continuing_subword_prefix;  // e.g. "##" on every symbol but a word's first
  std::string end_of_word_suffix;         // e.g. "</w>" on a word's last symbol
};

// Thrown-by-constructor errors name the merge or token and `where` (e.g. "/model/merges/12").
class BpeModel {
 public:
  // Ids are dense tables indexed by id: a file claiming a larger id is refused, not allocated.
  static constexpr int32_t kMaxId = (1 << 24) - 1;

  // vocab: (token text, id) pairs; merges: pairs of token texts in rank order.
  BpeModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeConfig config,
           const std::string& where);

  // Appends the ids of one pre-tokenized word (thread-safe; per-thread word cache).
  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    encode_word(word, out, thread_cache());
  }
  // The same with the calling thread's cache for this model (thread_cache()) fetched once by
  // the caller, for a loop over many words.
  void encode_word(std::string_view word, std::vector<int32_t>& out, WordCache& cache) const;
  WordCache& thread_cache() const;

  int32_t id_limit() const { return int32_t(id_to_text_.size()); }  // ids are below this
  // Token text as stored in the vocabulary ("" for an id with no entry).
  const std::string& token_text(int32_t id) const { return id_to_text_[size_t(id)]; }
  bool has_id(int32_t id) const {
    return id >= 0 && size_t(id) < id_to_text_.size() && has_entry_[size_t(id)];
  }
  std::optional<int32_t> token_id(std::string_view text) const;
  const BpeConfig& config() const { return config_; }
  size_t merge_count() const { return merge_count_; }

  // Words with more symbols than this use a heap instead of rescanning (exposed for tests).
  void set_heap_threshold(size_t symbols) { heap_threshold_ = symbols; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  const Merge* find_merge(int32_t left, int32_t right) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void merge_scan(std::vector<int32_t>& symbols) const;
  void merge_heap(std::vector<int32_t>& symbols) const;
  void encode_uncached(std::string_view word, std::vector<int32_t>& out) const;

  BpeConfig config_;
  std::vector<std::string> id_to_text_;
  std::vector<bool> has_entry_;
  // Lookup by the model's working form: raw bytes when byte_level, token text otherwise.
  StringMap<int32_t> piece_to_id_;
  StringMap<int32_t> text_to_id_;  // by stored text (byte_level only)
  int32_t byte_ids_[256];        // byte_level: the token of each single byte (-1: none)
  int32_t byte_fallback_ids_[256];  // byte_fallback: the "<0xXX>" tokens (-1: none)
  std::optional<int32_t> unk_id_;
  // Open-addressing table of merges keyed by the (left, right) id pair.
  std::vector<uint64_t> merge_keys_;
  std::vector<Merge> merge_values_;
  size_t merge_count_ = 0;
  size_t heap_threshold_ = 48;
  uint64_t uid_;  // identifies this model's per-thread word cache
};

}  // namespace distill
