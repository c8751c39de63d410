// GGUF (llama.cpp's model format), version 2 and 3: read (memory-mapped) and write.
// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata key/values,
// tensor infos (name, n_dims, dims innermost-first, ggml type, offset), padding to the
// alignment (general.alignment, default 32), tensor data. All little-endian.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/mmap.h"

namespace distill {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value. Arrays hold elements of one type (arrays of arrays are allowed).
struct GgufValue {
  GgufType type = GgufType::UINT32;
  GgufType array_type = GgufType::UINT32;  // element type when type == ARRAY
  uint64_t u = 0;       // UINT*, BOOL (0/1)
  int64_t i = 0;        // INT*
  double f = 0.0;       // FLOAT32, FLOAT64
  std::string s;        // STRING
  std::vector<GgufValue> array;

  // Typed reads; each throws distill::Error naming `key` when the type does not fit.
  int64_t as_int(std::string_view key) const;      // any integer type (and BOOL)
  double as_float(std::string_view key) const;     // FLOAT32/64 or any integer
  bool as_bool(std::string_view key) const;
  const std::string& as_string(std::string_view key) const;
  std::vector<std::string> as_strings(std::string_view key) const;  // ARRAY of STRING
  std::vector<float> as_floats(std::string_view key) const;         // ARRAY of numbers
  std::vector<int64_t> as_ints(std::string_view key) const;         // ARRAY of integers

  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_u64(uint64_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(std::vector<std::string> v);
  static GgufValue of_f32s(const std::vector<float>& v);
  static GgufValue of_i32s(const std::vector<int32_t>& v);
};

// ggml tensor types this project reads or writes (numbering from ggml.h).
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12, BF16 = 30 };
const char* ggml_type_name(GgmlType type);
// Bytes for `n` elements (n a multiple of the block size for quantized types).
size_t ggml_type_bytes(GgmlType type, int64_t n);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) dimension
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // from the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Validates everything it reads (magic, version 2/3, counts, string lengths, value types,
  // array sizes, tensor types, dims, offsets, alignment, data within the file): a malformed
  // file is a distill::Error naming the path and what was wrong, never a crash.
  static GgufFile open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return version_; }
  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;
  const GgufValue& get(std::string_view key) const;  // throws naming the file and key
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // Dequantized/converted to f32: F32, F16, BF16, F64, I8, I16, I32, Q8_0, Q4_0, Q4_1, Q5_0,
  // Q5_1, Q4_K, Q6_K (formats/ggml_quant.h); any other type is a distill::Error naming it.
  std::vector<float> read_f32(const GgufTensorInfo& tensor) const;

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t, std::less<>> meta_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

class GgufWriter {
 public:
  void set(std::string key, GgufValue value);  // replaces an existing key, else appends
  // Adds a tensor from f32 data (shape in row-major/PyTorch order, outermost first), converted
  // to `type` (F32, F16, BF16, Q8_0). The data is copied/converted at add time.
  void add_tensor(std::string name, const std::vector<int64_t>& shape, const float* data,
                  GgmlType type);
  // Writes version 3 with general.alignment (default 32), atomically.
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;  // ggml order
    GgmlType type;
    std::vector<uint8_t> bytes;
  };
  std::vector<Tensor> tensors_;
};

}  // namespace distill
