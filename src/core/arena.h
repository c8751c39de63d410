// Flat float arenas: parameters, gradients, optimizer moments and activations each live in one
// 64-byte-aligned allocation, carved into tensors (as in llm.c), so they are easy to zero,
// checkpoint and (later) all-reduce as one block.
#pragma once
#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

namespace distill {

class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(size_t count) { resize(count); }
  // Reallocates (contents are not kept) and zero-fills.
  //
  // Buffers of 4 MB and more are 2 MB-aligned and asked to be backed by transparent huge pages
  // (this machine's THP mode is "madvise"): a decode step streams every weight once, and with
  // 4 KB pages that stream ran at ~24 GB/s on one thread against ~30 GB/s with 2 MB pages
  // (fewer TLB misses, and the prefetchers do not stop at 4 KB page boundaries).
  void resize(size_t count) {
    const size_t bytes = allocation_bytes(count);
    const bool huge = bytes >= 2 * kHuge;
    data_.reset(bytes ? static_cast<float*>(std::aligned_alloc(huge ? kHuge : 64, bytes))
                      : nullptr);
    if (bytes && !data_) throw std::bad_alloc();
    if (huge) madvise(data_.get(), bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
    size_ = count;
    bytes_ = bytes;
    zero();
  }
  void zero() {
    // memset over the allocation's rounded-up byte size: GCC 12 cannot bound size_ * 4 and warns
    // (-Wstringop-overflow) when it inlines a plain fill of size_ floats.
    if (data_) std::memset(static_cast<void*>(data_.get()), 0, bytes_);
  }
  // The bytes resize(count) allocates: 64-byte multiples, 2 MB multiples from 4 MB on.
  static size_t allocation_bytes(size_t count) {
    size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    if (bytes >= 2 * kHuge) bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    return bytes;
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  static constexpr size_t kHuge = size_t(2) << 20;
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float[], Free> data_;
  size_t size_ = 0;
  size_t bytes_ = 0;
};

// Plans a set of tensors, then allocates them together in one FloatBuffer. Each tensor starts on
// a 64-byte boundary.
class BufferPlan {
 public:
  void add(float*& ptr, size_t count) { items_.push_back({&ptr, (count + 15) / 16 * 16}); }
  // The floats allocate() will ask for: what memory estimates read without allocating.
  size_t floats() const {
    size_t total = 0;
    for (const auto& item : items_) total += item.count;
    return total;
  }
  void allocate(FloatBuffer& buffer) {
    const size_t total = floats();
    buffer.resize(total);
    size_t offset = 0;
    for (auto& item : items_) {
      *item.ptr = buffer.data() + offset;
      offset += item.count;
    }
    items_.clear();
  }

 private:
  struct Item {
    float** ptr;
    size_t count;
  };
  std::vector<Item> items_;
};

}  // namespace distill
