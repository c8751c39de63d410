// A per-thread cache of word → token ids for BPE: natural text repeats its words, so most
// words skip the merge loop. Open addressing over flat arenas (no allocation per entry); when it
// holds kMaxEntries words it starts over, which bounds memory without any bookkeeping on hits.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

class WordCache {
 public:
  static constexpr size_t kMaxEntries = size_t(1) << 16;
  static constexpr size_t kMaxWordBytes = 256;  // longer words are not cached

  WordCache() : slots_(2 * kMaxEntries) {}

  static uint64_t hash(std::string_view key) {
    // 8 bytes per step, multiply-xorshift mixing; good enough to spread short words.
    uint64_t h = 0x9E3779B97F4A7C15ull ^ key.size();
    size_t i = 0;
    for (; i + 8 <= key.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, key.data() + i, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 31;
    }
    uint64_t tail = 0;
    std::memcpy(&tail, key.data() + i, key.size() - i);
    h = (h ^ tail) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    return h | 1;  // 0 marks an empty slot
  }

  // The cached ids of `key` (with hash h), or false.
  bool find(std::string_view key, uint64_t h, const int32_t*& ids, size_t& count) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_len == key.size() && same_bytes(keys_.data() + s.key_offset, key)) {
        ids = values_.data() + s.value_offset;
        count = s.value_len;
        return true;
      }
    }
  }

  void insert(std::string_view key, uint64_t h, const int32_t* ids, size_t count) {
    if (key.size() > kMaxWordBytes) return;
    if (entries_ >= kMaxEntries) clear();
    const size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    while (slots_[i].hash != 0) i = (i + 1) & mask;
    slots_[i] = {h, uint32_t(keys_.size()), uint32_t(key.size()), uint32_t(values_.size()),
                 uint32_t(count)};
    keys_.append(key);
    values_.insert(values_.end(), ids, ids + count);
    entries_++;
  }

  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    values_.clear();
    entries_ = 0;
  }

 private:
  // Words are short: comparing 8 bytes at a time inline beats a call to memcmp.
  static bool same_bytes(const char* stored, std::string_view key) {
    size_t i = 0;
    for (; i + 8 <= key.size(); i += 8) {
      uint64_t a, b;
      std::memcpy(&a, stored + i, 8);
      std::memcpy(&b, key.data() + i, 8);
      if (a != b) return false;
    }
    for (; i < key.size(); i++)
      if (stored[i] != key[i]) return false;
    return true;
  }

  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_len = 0, value_offset = 0, value_len = 0;
  };
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> values_;
  size_t entries_ = 0;
};

}  // namespace distill
