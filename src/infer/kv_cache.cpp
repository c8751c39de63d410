#include "infer/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>

#include "model/model.h"

namespace distill {

KvCache::KvCache(int layers_, int slots_, int max_len_, int kv_heads_, int head_dim_,
                 const KvCacheOptions& o)
    : layers(layers_),
      slots(slots_),
      max_len(max_len_),
      kv_heads(kv_heads_),
      head_dim(head_dim_),
      block_size(o.block_size),
      type(o.type),
      length(size_t(slots_), 0),
      table_(size_t(slots_)),
      promised_(size_t(slots_), 0) {
  if (slots <= 0 || max_len <= 0) throw Error("KV cache: {} slots of {} positions", slots, max_len);
  if (block_size <= 0 || block_size > 4096)
    throw Error("KV cache: block size {} is not in 1..4096", block_size);
  if (o.blocks < 0) throw Error("KV cache: pool of {} blocks", o.blocks);
  blocks = o.blocks > 0 ? o.blocks : slots * blocks_for(max_len);
  block_bytes_ = size_t(block_size) * head_dim * kv_type_bytes(type);
  half_ = size_t(layers) * blocks * kv_heads * block_bytes_;
  // Anonymous pages are committed when first written: a pool sized for every slot's whole
  // context costs only the blocks sequences have used (freed blocks are reused first).
  void* p = mmap(nullptr, std::max<size_t>(2 * half_, 1), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw Error("KV cache: cannot map {} MB for {} blocks", (2 * half_) >> 20, blocks);
  pool_ = static_cast<uint8_t*>(p);
  free_.resize(size_t(blocks));
  for (int b = 0; b < blocks; b++) free_[size_t(b)] = blocks - 1 - b;  // block 0 first
}

KvCache::~KvCache() {
  if (pool_) munmap(pool_, std::max<size_t>(2 * half_, 1));
}

bool KvCache::reserve(int slot, int positions) {
  DISTILL_CHECK(slot >= 0 && slot < slots);
  const int need = blocks_for(positions);
  if (need > blocks)
    throw Error(
        "a sequence of {} positions needs {} KV cache blocks of {} positions, but the whole pool "
        "has {} blocks",
        positions, need, block_size, blocks);
  const int extra = need - committed(slot);
  if (extra <= 0) return true;
  if (extra > free_blocks()) return false;
  promised_[size_t(slot)] = need;
  committed_ += extra;
  return true;
}

void KvCache::ensure(int slot, int positions) {
  std::vector<int>& t = table_[size_t(slot)];
  const int need = blocks_for(positions);
  while (int(t.size()) < need) {
    const bool promised = int(t.size()) < promised_[size_t(slot)];
    if (!promised && free_blocks() == 0)
      throw Error(
          "KV cache pool exhausted: slot {} needs a block for position {}, but all {} blocks of "
          "{} positions are in use or promised",
          slot, int(t.size()) * block_size, blocks, block_size);
    DISTILL_CHECK(!free_.empty());
    t.push_back(free_.back());
    free_.pop_back();
    if (!promised) committed_++;
  }
}

void KvCache::reset(int slot) {
  committed_ -= committed(slot);
  std::vector<int>& t = table_[size_t(slot)];
  for (auto it = t.rbegin(); it != t.rend(); ++it) free_.push_back(*it);
  t.clear();
  promised_[size_t(slot)] = 0;
  length[size_t(slot)] = 0;
}

std::unique_ptr<KvCache> make_kv_cache(const Model& model, int slots, int max_len,
                                       const KvCacheOptions& options) {
  const ModelConfig& c = model.config();
  if (c.arch == Arch::Gpt2 && max_len > c.max_position)
    throw Error("context of {} tokens exceeds the model's n_positions {}", max_len,
                c.max_position);
  return std::make_unique<KvCache>(c.num_layers, slots, max_len, c.num_kv_heads, c.head_dim,
                                   options);
}

}  // namespace distill
