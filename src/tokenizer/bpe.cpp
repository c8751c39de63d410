#include "tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <memory>
#include <queue>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"
#include "tokenizer/word_cache.h"

namespace distill {
namespace {

constexpr uint64_t kEmptyKey = ~uint64_t(0);  // ids are non-negative, so no pair has this key

size_t mix(uint64_t key) { return size_t((key * 0x9E3779B97F4A7C15ull) >> 17); }

std::atomic<uint64_t> next_model_uid{1};

// The word cache of model `uid` on this thread. A thread keeps the caches of the last few
// models it encoded with, so alternating between two tokenizers does not thrash.
WordCache& cache_of_model(uint64_t uid) {
  struct Entry {
    uint64_t uid = 0;
    std::unique_ptr<WordCache> cache;
  };
  thread_local std::array<Entry, 4> entries;
  thread_local size_t next_victim = 0;
  for (Entry& e : entries)
    if (e.uid == uid) return *e.cache;
  Entry& e = entries[next_victim++ % entries.size()];
  e.uid = uid;
  if (e.cache) e.cache->clear();
  else e.cache = std::make_unique<WordCache>();
  return *e.cache;
}

std::string byte_fallback_token(uint8_t b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

}  // namespace

BpeModel::BpeModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeConfig config, const std::string& where)
    : config_(std::move(config)), uid_(next_model_uid.fetch_add(1)) {
  if (config_.byte_level &&
      (!config_.continuing_subword_prefix.empty() || !config_.end_of_word_suffix.empty()))
    throw Error("{}: a byte-level BPE cannot have a continuing_subword_prefix or "
                "end_of_word_suffix", where);
  int32_t limit = 0;
  for (const auto& [text, id] : vocab) {
    if (id < 0 || id > kMaxId)
      throw Error("{}: token \"{}\" has id {} (expected 0..{})", where, text, id, kMaxId);
    limit = std::max(limit, id + 1);
  }
  id_to_text_.resize(size_t(limit));
  has_entry_.assign(size_t(limit), false);
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  std::fill(std::begin(byte_fallback_ids_), std::end(byte_fallback_ids_), -1);
  piece_to_id_.reserve(vocab.size());
  for (const auto& [text, id] : vocab) {
    if (has_entry_[size_t(id)])
      throw Error("{}: id {} is given to both \"{}\" and \"{}\"", where, id,
                  id_to_text_[size_t(id)], text);
    id_to_text_[size_t(id)] = text;
    has_entry_[size_t(id)] = true;
    if (config_.byte_level) {
      text_to_id_.emplace(text, id);
      // A token whose characters are not all byte characters can never come out of the
      // merges of a byte-level word; it stays reachable by its text only.
      if (auto bytes = byte_level::decode(text)) {
        if (bytes->size() == 1) byte_ids_[static_cast<unsigned char>((*bytes)[0])] = id;
        piece_to_id_.emplace(std::move(*bytes), id);
      }
    } else {
      piece_to_id_.emplace(text, id);
    }
  }
  if (config_.byte_fallback)
    for (int b = 0; b < 256; b++)
      if (auto id = token_id(byte_fallback_token(uint8_t(b)))) byte_fallback_ids_[b] = *id;
  if (config_.unk_token) {
    unk_id_ = token_id(*config_.unk_token);
    if (!unk_id_)
      throw Error("{}: unk_token \"{}\" is not in the vocabulary", where, *config_.unk_token);
  }

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  merge_keys_.assign(capacity, kEmptyKey);
  merge_values_.resize(capacity);
  const size_t prefix_len = config_.continuing_subword_prefix.size();
  for (size_t rank = 0; rank < merges.size(); rank++) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture those in a lambda.
    const std::string& left = merges[rank].first;
    const std::string& right = merges[rank].second;
    auto lookup = [&](const std::string& text) {
      auto id = token_id(text);
      if (!id)
        throw Error("{}/{}: merge \"{} {}\" uses \"{}\", which is not in the vocabulary", where,
                    rank, left, right, text);
      return *id;
    };
    int32_t left_id = lookup(left), right_id = lookup(right);
    if (prefix_len > 0 && right.compare(0, prefix_len, config_.continuing_subword_prefix) != 0)
      throw Error("{}/{}: merge \"{} {}\": the right side lacks the continuing_subword_prefix",
                  where, rank, left, right);
    int32_t merged = lookup(left + right.substr(prefix_len));
    const uint64_t key = pair_key(left_id, right_id);
    size_t i = mix(key) & (capacity - 1);
    while (merge_keys_[i] != kEmptyKey && merge_keys_[i] != key) i = (i + 1) & (capacity - 1);
    if (merge_keys_[i] == kEmptyKey) merge_count_++;
    merge_keys_[i] = key;  // a repeated pair takes the later rank, as HF's map insert does
    merge_values_[i] = {int32_t(rank), merged};
  }
}

std::optional<int32_t> BpeModel::token_id(std::string_view text) const {
  const auto& map = config_.byte_level ? text_to_id_ : piece_to_id_;
  auto it = map.find(text);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

const BpeModel::Merge* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merge_keys_.size() - 1;
  for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
    if (merge_keys_[i] == key) return &merge_values_[i];
    if (merge_keys_[i] == kEmptyKey) return nullptr;
  }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  // An unknown character becomes unk (consecutive ones fused when fuse_unk), or is dropped when
  // there is no unk token, as HF's BPE does.
  bool pending_unk = false;
  auto flush_unk = [&] {
    if (pending_unk) symbols.push_back(*unk_id_);
    pending_unk = false;
  };
  auto unknown = [&] {
    if (!unk_id_) return;
    if (pending_unk && !config_.fuse_unk) symbols.push_back(*unk_id_);
    pending_unk = true;
  };
  if (config_.byte_level) {
    for (unsigned char b : word) {
      if (byte_ids_[b] >= 0) {
        flush_unk();
        symbols.push_back(byte_ids_[b]);
      } else {
        unknown();
      }
    }
    flush_unk();
    return;
  }
  thread_local std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    pos = std::min(word.size(), pos + size_t(unicode::utf8_length(uint8_t(word[pos]))));
    std::string_view ch = word.substr(start, pos - start);
    std::string_view lookup = ch;
    if (!config_.continuing_subword_prefix.empty() || !config_.end_of_word_suffix.empty()) {
      piece.clear();
      if (start > 0) piece += config_.continuing_subword_prefix;
      piece += ch;
      if (pos == word.size()) piece += config_.end_of_word_suffix;
      lookup = piece;
    }
    auto it = piece_to_id_.find(lookup);
    if (it != piece_to_id_.end()) {
      flush_unk();
      symbols.push_back(it->second);
      continue;
    }
    if (config_.byte_fallback) {
      bool all = true;
      for (unsigned char b : lookup) all = all && byte_fallback_ids_[b] >= 0;
      if (all) {
        // HF keeps a pending unk waiting across byte-fallback symbols; so do we.
        for (unsigned char b : lookup) symbols.push_back(byte_fallback_ids_[b]);
        continue;
      }
    }
    unknown();
  }
  flush_unk();
}

// Repeatedly merges the lowest-ranked adjacent pair (leftmost on ties). O(n^2) compares but
// only two table lookups per merge: the fastest choice for the short words of natural text.
void BpeModel::merge_scan(std::vector<int32_t>& symbols) const {
  thread_local std::vector<Merge> pairs;  // pairs[i]: the merge of symbols i and i+1
  const Merge none{INT_MAX, -1};
  auto merge_at = [&](size_t i) {
    const Merge* m = find_merge(symbols[i], symbols[i + 1]);
    return m ? *m : none;
  };
  size_t n = symbols.size();
  pairs.resize(n);
  for (size_t i = 0; i + 1 < n; i++) pairs[i] = merge_at(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; i++)
      if (pairs[i].rank < pairs[best].rank) best = i;
    if (pairs[best].rank == INT_MAX) break;
    symbols[best] = pairs[best].merged;
    symbols.erase(symbols.begin() + long(best) + 1);
    pairs.erase(pairs.begin() + long(best) + 1);
    n--;
    if (best > 0) pairs[best - 1] = merge_at(best - 1);
    if (best + 1 < n) pairs[best] = merge_at(best);
  }
}

// The same merges with a priority queue over (rank, position) and a linked list of symbols,
// O(n log n), for long words (e.g. whole lines when there is no pre-tokenizer).
void BpeModel::merge_heap(std::vector<int32_t>& symbols) const {
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int32_t n = int32_t(symbols.size());
  std::vector<int32_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  std::vector<bool> alive(size_t(n), true);
  for (int32_t i = 0; i < n; i++) {
    prev[size_t(i)] = i - 1;
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int32_t left) {
    if (left < 0 || next[size_t(left)] < 0) return;
    if (const Merge* m = find_merge(symbols[size_t(left)], symbols[size_t(next[size_t(left)])]))
      queue.push({m->rank, left, m->merged});
  };
  for (int32_t i = 0; i + 1 < n; i++) push(i);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    const int32_t right = next[size_t(top.pos)];
    if (!alive[size_t(top.pos)] || right < 0) continue;
    const Merge* current = find_merge(symbols[size_t(top.pos)], symbols[size_t(right)]);
    if (current == nullptr || current->merged != top.merged)
      continue;  // stale: one side has merged since this pair was queued (HF's test)
    symbols[size_t(top.pos)] = top.merged;
    alive[size_t(right)] = false;
    next[size_t(top.pos)] = next[size_t(right)];
    if (next[size_t(right)] >= 0) prev[size_t(next[size_t(right)])] = top.pos;
    push(prev[size_t(top.pos)]);
    push(top.pos);
  }
  size_t kept = 0;
  for (int32_t i = 0; i < n; i++)
    if (alive[size_t(i)]) symbols[kept++] = symbols[size_t(i)];
  symbols.resize(kept);
}

void BpeModel::encode_uncached(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> symbols;
  symbols.clear();
  initial_symbols(word, symbols);
  if (symbols.size() > heap_threshold_) merge_heap(symbols);
  else merge_scan(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

WordCache& BpeModel::thread_cache() const { return cache_of_model(uid_); }

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out,
                           WordCache& cache) const {
  if (word.empty()) return;
  if (config_.ignore_merges) {
    auto it = piece_to_id_.find(word);
    if (it != piece_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > WordCache::kMaxWordBytes) {
    encode_uncached(word, out);
    return;
  }
  const uint64_t h = WordCache::hash(word);
  const int32_t* ids = nullptr;
  size_t count = 0;
  if (cache.find(word, h, ids, count)) {
    out.insert(out.end(), ids, ids + count);
    return;
  }
  const size_t first = out.size();
  encode_uncached(word, out);
  cache.insert(word, h, out.data() + first, out.size() - first);
}

}  // namespace distill
