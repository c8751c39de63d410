// Read-only memory mapping of a whole file: readers (safetensors, GGUF, dataset shards) hand out
// pointers into the mapping instead of copying tensors into memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace distill {

class MappedFile {
 public:
  // Maps `path` read-only. Throws distill::Error naming the path and the OS reason when the file
  // is missing, unreadable or not a regular file. An empty file maps to data() == nullptr,
  // size() == 0 (mmap cannot map zero bytes).
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // The mapping's address does not change when a MappedFile is moved, so pointers into it stay
  // valid for as long as some MappedFile owns the mapping.
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void unmap() noexcept;

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace distill
