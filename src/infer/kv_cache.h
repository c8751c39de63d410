// Key/value cache for incremental decoding: per layer, per sequence slot, the keys and values of
// every position so far (after RoPE for keys), so each new token costs one row of work.
#pragma once
#include <vector>

#include "core/arena.h"
#include "core/error.h"

namespace distill {

struct KvCache {
  int layers = 0, slots = 0, max_len = 0, kv_heads = 0, head_dim = 0;
  FloatBuffer k, v;         // (layers, slots, kv_heads, max_len, head_dim)
  std::vector<int> length;  // positions filled per slot

  KvCache(int layers_, int slots_, int max_len_, int kv_heads_, int head_dim_)
      : layers(layers_), slots(slots_), max_len(max_len_), kv_heads(kv_heads_),
        head_dim(head_dim_), length(slots_, 0) {
    const size_t n = size_t(layers) * slots * kv_heads * max_len * head_dim;
    k.resize(n);
    v.resize(n);
  }
  // (max_len, head_dim) block of one layer, slot and kv head.
  float* k_at(int layer, int slot, int head) { return k.data() + offset(layer, slot, head); }
  float* v_at(int layer, int slot, int head) { return v.data() + offset(layer, slot, head); }
  void reset(int slot) { length[slot] = 0; }

 private:
  size_t offset(int layer, int slot, int head) const {
    return ((size_t(layer) * slots + slot) * kv_heads + head) * size_t(max_len) * head_dim;
  }
};

// Rows to run through the model incrementally: token `tokens[r]` of sequence slot `slots[r]` at
// position `positions[r]`. Rows of one slot must be in increasing position order and continue
// that slot's cache (positions[r] == cache length at that point).
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
