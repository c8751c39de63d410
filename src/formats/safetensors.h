// safetensors (Hugging Face): u64 little-endian header length N, N bytes of JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
// data buffer (offsets are relative to its start). Reader (mmap, zero-copy), writer, and the
// sharded-checkpoint convention (model-0000i-of-0000N.safetensors + model.safetensors.index.json).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/mmap.h"
#include "formats/dtype.h"

namespace distill {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major; empty = scalar
  // Points into the file's mapping: valid while the SafetensorsFile/Model that returned it lives.
  // Aligned only as far as the file aligned it; read with memcpy or convert_to_f32.
  const uint8_t* data = nullptr;
  size_t nbytes = 0;  // == numel() * dtype_size(dtype), checked when the file is opened
  int64_t numel() const;
};

// One .safetensors file, memory-mapped and validated on open.
class SafetensorsFile {
 public:
  // Validates the whole header; every problem is a distill::Error naming the file (and tensor)
  // and what was expected vs found. Holes between tensors are allowed (some writers leave them);
  // overlaps are not.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  // In the order the header lists them (not data-offset order).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  const TensorInfo& get(std::string_view name) const;   // throws naming file and tensor
  // "__metadata__"; empty when absent or null.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor converted to fp32 (any dtype; see convert_to_f32), numel() values.
  std::vector<float> read_f32(std::string_view name) const;

 private:
  MappedFile file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to be written: a view of caller-owned bytes (`nbytes` little-endian elements).
struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Builds one .safetensors file. add() only REFERENCES the data (no copy, so saving a model does
// not double its memory): every buffer must stay alive and unchanged until write() returns.
//
// Layout: the header lists tensors in insertion order; the data buffer holds them with no gaps
// (the reference reader, and so Python/transformers, rejects files with holes), grouped by element
// size, largest first, insertion order within a group. With the header padded to a multiple of 8,
// every tensor then starts at a multiple of its element size, so mapped data can be used in place.
// A file of one dtype is laid out exactly in insertion order.
class SafetensorsWriter {
 public:
  // Throws distill::Error (naming the tensor) for an empty or duplicate name, "__metadata__",
  // a negative dimension, nbytes != numel * dtype_size, or null data with nbytes > 0.
  void add(std::string name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  void add(const TensorRef& tensor);
  void set_metadata(std::string key, std::string value);
  // Writes atomically (write_file_atomic): an existing file at `path` is replaced only by a
  // complete new one.
  void write(const std::string& path) const;
  // Size of the file write() produces.
  size_t total_bytes() const;
  size_t data_bytes() const { return data_bytes_; }

 private:
  struct Layout {
    std::string header;            // JSON padded with spaces to a multiple of 8
    std::vector<size_t> order;     // indices into tensors_ in buffer order
  };
  Layout layout() const;

  std::vector<TensorRef> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
  size_t data_bytes_ = 0;
};

// Saves `tensors` into `dir` (created if needed) the way Hugging Face does: one
// "model.safetensors" when the tensor bytes fit in max_shard_bytes, otherwise
// "model-00001-of-0000N.safetensors", ... filled greedily in order (a tensor larger than the limit
// gets a shard of its own) plus "model.safetensors.index.json"
// ({"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}). `metadata` goes into
// every file's "__metadata__", with "format": "pt" added unless given (transformers requires it).
// Every file is written atomically; model files of an earlier save
// that the new one does not use are deleted only after the new ones are in place.
// A sharded save also records one random save id in the index and every shard, so
// SafetensorsModel detects a directory left half-overwritten by a crash during the save.
// Returns the names (not paths) of the files written, index last.
std::vector<std::string> write_safetensors_sharded(
    const std::string& dir, const std::vector<TensorRef>& tensors, size_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata);

// A model stored as one safetensors file or as an index plus shards.
class SafetensorsModel {
 public:
  // `dir_or_file`: a .safetensors file, a .index.json file, or a directory holding
  // model.safetensors (preferred, as transformers does) or model.safetensors.index.json.
  // Errors name the index and shard for a missing shard, a tensor the index puts in a shard that
  // lacks it, or shards from different saves.
  static SafetensorsModel open(const std::string& dir_or_file);

  // The path opened from: the .safetensors file or the index.
  const std::string& path() const { return path_; }
  // Every tensor, shard by shard, each shard in header order. Tensors present in a shard but not
  // named by the index are left out (transformers ignores them too).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& get(std::string_view name) const;  // throws naming the model and tensor
  std::vector<float> read_f32(std::string_view name) const;
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  // "__metadata__" of the first shard (each shard of an HF save carries the same).
  const std::map<std::string, std::string>& metadata() const;

 private:
  std::string path_;
  std::vector<SafetensorsFile> shards_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace distill
