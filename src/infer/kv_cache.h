// Key/value cache for incremental decoding, paged: the keys (after RoPE) and values of every
// position so far live in fixed-size blocks of `block_size` positions taken from one pool, and
// each sequence slot has a block table (its blocks in position order). Memory follows the live
// tokens: a slot takes a block when a row first writes into it and gives all its blocks back
// when it is reset, so short and long sequences share the pool instead of each reserving the
// whole context.
//
// Admission control (infer/batch_decoder.h): a slot may first `reserve` the positions it can
// grow to; reserved blocks are promised to it and never handed to another slot, so a sequence
// once admitted cannot run out of blocks mid-generation. `reserve` answers false while the pool
// cannot promise that many (the caller waits for evictions) and throws when the request is
// larger than the whole pool (it could never run).
//
// Within a block, one layer's kv head has its keys as a transposed (head_dim, block_size) matrix
// and its values as a (block_size, head_dim) one, each contiguous (infer/kv_type.h says why).
// Elements are stored as f32, bf16 or f16, converted on write. Block sizes that are multiples of
// 16 take the AVX-512 path.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/error.h"
#include "infer/kv_type.h"

namespace distill {

class Model;

struct KvCacheOptions {
  KvType type = KvType::F32;  // element storage
  int block_size = 16;        // positions per block
  int blocks = 0;             // pool size in blocks; 0: every slot can hold max_len positions
};

struct KvCache {
  int layers = 0, slots = 0, max_len = 0, kv_heads = 0, head_dim = 0;
  int block_size = 0, blocks = 0;
  KvType type = KvType::F32;
  std::vector<int> length;  // positions filled per slot (Model::forward_rows keeps it)

  KvCache(int layers, int slots, int max_len, int kv_heads, int head_dim,
          const KvCacheOptions& options = {});
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // One layer's kv head in a block: keys (head_dim, block_size), values (block_size, head_dim),
  // elements of `type`.
  void* k_block(int layer, int block, int head) { return pool_ + offset(layer, block, head); }
  void* v_block(int layer, int block, int head) {
    return pool_ + half_ + offset(layer, block, head);
  }
  // The slot's blocks in position order (position p is in table(slot)[p / block_size]).
  const std::vector<int>& table(int slot) const { return table_[size_t(slot)]; }
  int blocks_for(int positions) const { return (positions + block_size - 1) / block_size; }

  // Promises the blocks for `positions` positions to `slot` (counting what it holds). False when
  // the pool cannot promise them now; an Error when they exceed the whole pool.
  bool reserve(int slot, int positions);
  // Makes positions [0, positions) of `slot` writable, taking blocks from the pool: its own
  // promised ones first, then unpromised ones. An Error when none is left (a bug of the caller
  // when it reserved first; a pool too small for the work otherwise).
  void ensure(int slot, int positions);
  // Empties the slot: its blocks and its promise go back to the pool.
  void reset(int slot);

  int free_blocks() const { return blocks - committed_; }  // neither held nor promised
  int held_blocks() const { return blocks - int(free_.size()); }
  size_t pool_bytes() const { return 2 * half_; }

 private:
  size_t offset(int layer, int block, int head) const {
    return ((size_t(layer) * blocks + block) * kv_heads + head) * block_bytes_;
  }
  int committed(int slot) const {
    return std::max(int(table_[size_t(slot)].size()), promised_[size_t(slot)]);
  }

  size_t block_bytes_ = 0;  // one head's block: block_size * head_dim elements
  size_t half_ = 0;         // bytes of the key pool (the value pool follows it)
  uint8_t* pool_ = nullptr;
  std::vector<std::vector<int>> table_;
  std::vector<int> promised_;  // blocks promised per slot (held ones count against it)
  std::vector<int> free_;      // free block ids; the last is taken first (recently used)
  int committed_ = 0;          // sum over slots of max(held, promised)
};

// A cache for `slots` sequences of up to max_len positions of `model` (its layers, kv heads and
// head size); gpt2's learned positions bound max_len by n_positions. Model::make_cache(slots,
// max_len) is this with the default options (f32, a pool that never makes anyone wait).
std::unique_ptr<KvCache> make_kv_cache(const Model& model, int slots, int max_len,
                                       const KvCacheOptions& options = {});

// Rows to run through the model incrementally: token `tokens[r]` of sequence slot `slots[r]` at
// position `positions[r]`. Rows of one slot must be in increasing position order and continue
// that slot's cache (positions[r] == cache length at that point). Rows of different slots may
// be at any positions: prompt rows of one sequence ride along with decode rows of others.
struct InferBatch {
  std::vector<int32_t> tokens, slots, positions;
  std::vector<uint8_t> want_logits;  // 1: return this row's logits
  void add(int32_t token, int slot, int position, bool logits) {
    tokens.push_back(token);
    slots.push_back(slot);
    positions.push_back(position);
    want_logits.push_back(logits ? 1 : 0);
  }
  size_t size() const { return tokens.size(); }
  void clear() {
    tokens.clear();
    slots.clear();
    positions.clear();
    want_logits.clear();
  }
};

}  // namespace distill
