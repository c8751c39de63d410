// GGUF reading: metadata values and their typed accessors, GgufFile::open's validation, and
// tensor conversion to f32. A hostile file is a distill::Error, never a crash, a hang or an
// allocation larger than the file justifies: every count is checked against the bytes left
// before anything is reserved, and metadata arrays cannot nest deeper than kMaxArrayDepth.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats/ggml_quant.h"
#include "formats/gguf.h"

namespace distill {

namespace {

constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
// Above this many metadata values in total (array elements included) the file is not a model:
// each value costs sizeof(GgufValue) (~90 bytes) in memory.
constexpr uint64_t kMaxMetadataValues = uint64_t(1) << 26;
constexpr uint32_t kDefaultAlignment = 32;

bool is_integer(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
    case GgufType::BOOL:
      return true;
    default:
      return false;
  }
}

bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 ||
         t == GgufType::INT64;
}

// Bytes of a fixed-size value type; 0 for STRING and ARRAY.
size_t fixed_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

// A bounds-checked little-endian cursor over the mapped file. Errors name the file and the
// byte offset where reading failed, plus `what` was being read.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
    throw Error("{}: invalid GGUF file at byte {}: {}", path_, pos_,
                fmt::format(f, std::forward<Args>(args)...));
  }

  void need(size_t n, const char* what) const {
    if (n > remaining())
      fail("truncated: {} needs {} bytes, only {} left in the file", what, n, remaining());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    if (n > remaining())
      fail("{} has length {} but only {} bytes are left in the file", what, n, remaining());
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

GgufType read_type(Cursor& c, const char* what, const std::string& key) {
  const uint32_t t = c.read<uint32_t>(what);
  if (t > uint32_t(GgufType::FLOAT64))
    c.fail("metadata '{}': unknown value type {} (valid types are 0-12)", key, t);
  return GgufType(t);
}

GgufValue read_value(Cursor& c, GgufType type, const std::string& key, int depth,
                     uint64_t& budget) {
  if (budget == 0)
    c.fail("more than {} metadata values in total: not a model file", kMaxMetadataValues);
  budget--;
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::UINT8: v.u = c.read<uint8_t>("a u8 value"); break;
    case GgufType::INT8: v.i = c.read<int8_t>("an i8 value"); break;
    case GgufType::UINT16: v.u = c.read<uint16_t>("a u16 value"); break;
    case GgufType::INT16: v.i = c.read<int16_t>("an i16 value"); break;
    case GgufType::UINT32: v.u = c.read<uint32_t>("a u32 value"); break;
    case GgufType::INT32: v.i = c.read<int32_t>("an i32 value"); break;
    case GgufType::UINT64: v.u = c.read<uint64_t>("a u64 value"); break;
    case GgufType::INT64: v.i = c.read<int64_t>("an i64 value"); break;
    case GgufType::FLOAT32: v.f = c.read<float>("an f32 value"); break;
    case GgufType::FLOAT64: v.f = c.read<double>("an f64 value"); break;
    case GgufType::BOOL: {
      const uint8_t b = c.read<uint8_t>("a bool value");
      if (b > 1) c.fail("metadata '{}': bool value {} is neither 0 nor 1", key, b);
      v.u = b;
      break;
    }
    case GgufType::STRING: v.s = c.read_string("a string value"); break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth)
        c.fail("metadata '{}': arrays nested deeper than {} levels", key, kMaxArrayDepth);
      v.array_type = read_type(c, "an array element type", key);
      const uint64_t n = c.read<uint64_t>("an array length");
      // Smallest encoding of one element: its fixed size, a string's u64 length, or a nested
      // array's u32 type + u64 length.
      const size_t min_bytes = v.array_type == GgufType::STRING ? 8
                               : v.array_type == GgufType::ARRAY ? 12
                                                                 : fixed_size(v.array_type);
      if (n > c.remaining() / min_bytes)
        c.fail("metadata '{}': array of {} {} elements needs at least {} bytes, only {} left", key,
               n, gguf_type_name(v.array_type), n > UINT64_MAX / min_bytes ? UINT64_MAX
                                                                           : n * min_bytes,
               c.remaining());
      if (n > budget)
        c.fail("more than {} metadata values in total: not a model file", kMaxMetadataValues);
      v.array.reserve(size_t(n));
      for (uint64_t k = 0; k < n; k++)
        v.array.push_back(read_value(c, v.array_type, key, depth + 1, budget));
      break;
    }
  }
  return v;
}

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); i++) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::UINT8: return "u8";
    case GgufType::INT8: return "i8";
    case GgufType::UINT16: return "u16";
    case GgufType::INT16: return "i16";
    case GgufType::UINT32: return "u32";
    case GgufType::INT32: return "i32";
    case GgufType::FLOAT32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "u64";
    case GgufType::INT64: return "i64";
    case GgufType::FLOAT64: return "f64";
  }
  return "unknown";
}

// ---- GgufValue accessors ----

namespace {
std::string value_type_string(const GgufValue& v) {
  if (v.type == GgufType::ARRAY) return fmt::format("array of {}", gguf_type_name(v.array_type));
  return gguf_type_name(v.type);
}
}  // namespace

int64_t GgufValue::as_int(std::string_view key) const {
  if (!is_integer(type))
    throw Error("metadata '{}' is {}, expected an integer", key, value_type_string(*this));
  if (is_signed(type)) return i;
  if (u > uint64_t(std::numeric_limits<int64_t>::max()))
    throw Error("metadata '{}' = {} does not fit in a signed 64-bit integer", key, u);
  return int64_t(u);
}

double GgufValue::as_float(std::string_view key) const {
  if (type == GgufType::FLOAT32 || type == GgufType::FLOAT64) return f;
  if (type == GgufType::BOOL || !is_integer(type))
    throw Error("metadata '{}' is {}, expected a number", key, value_type_string(*this));
  return is_signed(type) ? double(i) : double(u);
}

bool GgufValue::as_bool(std::string_view key) const {
  if (type != GgufType::BOOL)
    throw Error("metadata '{}' is {}, expected bool", key, value_type_string(*this));
  return u != 0;
}

const std::string& GgufValue::as_string(std::string_view key) const {
  if (type != GgufType::STRING)
    throw Error("metadata '{}' is {}, expected string", key, value_type_string(*this));
  return s;
}

std::vector<std::string> GgufValue::as_strings(std::string_view key) const {
  if (type != GgufType::ARRAY || array_type != GgufType::STRING)
    throw Error("metadata '{}' is {}, expected array of string", key, value_type_string(*this));
  std::vector<std::string> out;
  out.reserve(array.size());
  for (const GgufValue& e : array) out.push_back(e.s);
  return out;
}

std::vector<float> GgufValue::as_floats(std::string_view key) const {
  if (type != GgufType::ARRAY ||
      (array_type != GgufType::FLOAT32 && array_type != GgufType::FLOAT64 &&
       (!is_integer(array_type) || array_type == GgufType::BOOL)))
    throw Error("metadata '{}' is {}, expected an array of numbers", key,
                value_type_string(*this));
  std::vector<float> out;
  out.reserve(array.size());
  for (const GgufValue& e : array) out.push_back(float(e.as_float(key)));
  return out;
}

std::vector<int64_t> GgufValue::as_ints(std::string_view key) const {
  if (type != GgufType::ARRAY || !is_integer(array_type))
    throw Error("metadata '{}' is {}, expected an array of integers", key,
                value_type_string(*this));
  std::vector<int64_t> out;
  out.reserve(array.size());
  for (const GgufValue& e : array) out.push_back(e.as_int(key));
  return out;
}

GgufValue GgufValue::of_u32(uint32_t v) {
  GgufValue g;
  g.type = GgufType::UINT32;
  g.u = v;
  return g;
}
GgufValue GgufValue::of_i32(int32_t v) {
  GgufValue g;
  g.type = GgufType::INT32;
  g.i = v;
  return g;
}
GgufValue GgufValue::of_u64(uint64_t v) {
  GgufValue g;
  g.type = GgufType::UINT64;
  g.u = v;
  return g;
}
GgufValue GgufValue::of_f32(float v) {
  GgufValue g;
  g.type = GgufType::FLOAT32;
  g.f = v;
  return g;
}
GgufValue GgufValue::of_bool(bool v) {
  GgufValue g;
  g.type = GgufType::BOOL;
  g.u = v ? 1 : 0;
  return g;
}
GgufValue GgufValue::of_string(std::string v) {
  GgufValue g;
  g.type = GgufType::STRING;
  g.s = std::move(v);
  return g;
}
GgufValue GgufValue::of_strings(std::vector<std::string> v) {
  GgufValue g;
  g.type = GgufType::ARRAY;
  g.array_type = GgufType::STRING;
  g.array.reserve(v.size());
  for (std::string& s : v) g.array.push_back(of_string(std::move(s)));
  return g;
}
GgufValue GgufValue::of_f32s(const std::vector<float>& v) {
  GgufValue g;
  g.type = GgufType::ARRAY;
  g.array_type = GgufType::FLOAT32;
  g.array.reserve(v.size());
  for (float x : v) g.array.push_back(of_f32(x));
  return g;
}
GgufValue GgufValue::of_i32s(const std::vector<int32_t>& v) {
  GgufValue g;
  g.type = GgufType::ARRAY;
  g.array_type = GgufType::INT32;
  g.array.reserve(v.size());
  for (int32_t x : v) g.array.push_back(of_i32(x));
  return g;
}

// ---- GgufFile ----

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.file_ = MappedFile::open(path);
  Cursor c(g.file_.path(), g.file_.data(), g.file_.size());

  // Header.
  if (g.file_.size() < 4) c.fail("not a GGUF file: {} bytes, too short for the magic",
                                  g.file_.size());
  const uint8_t* m = g.file_.data();
  if (std::memcmp(m, "GGUF", 4) != 0) {
    std::string shown;
    for (int k = 0; k < 4; k++)
      shown += (m[k] >= 0x20 && m[k] < 0x7f) ? std::string(1, char(m[k]))
                                             : fmt::format("\\x{:02x}", m[k]);
    c.fail("not a GGUF file: magic is '{}', expected 'GGUF'", shown);
  }
  c.read<uint32_t>("the magic");
  g.version_ = c.read<uint32_t>("the version");
  if (g.version_ != 2 && g.version_ != 3) {
    if (g.version_ == 1)
      c.fail("GGUF version 1 is not supported (it used 32-bit counts); supported versions: 2, 3");
    if ((g.version_ & 0xFFFF) == 0)
      c.fail("GGUF version {:#x} looks byte-swapped: big-endian GGUF is not supported",
             g.version_);
    c.fail("GGUF version {} is not supported; supported versions: 2, 3", g.version_);
  }
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Smallest metadata entry: u64 key length + u32 type + 1 byte; smallest tensor info:
  // u64 name length + u32 n_dims + u32 type + u64 offset.
  if (n_kv > c.remaining() / 13)
    c.fail("metadata count {} cannot fit in the {} bytes left in the file", n_kv, c.remaining());
  if (n_tensors > c.remaining() / 24)
    c.fail("tensor count {} cannot fit in the {} bytes left in the file", n_tensors,
           c.remaining());

  // Metadata.
  uint64_t budget = kMaxMetadataValues;
  g.metadata_.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; k++) {
    std::string key = c.read_string("a metadata key");
    if (key.empty()) c.fail("metadata entry {} has an empty key", k);
    if (g.meta_index_.count(key)) c.fail("metadata key '{}' appears twice", key);
    const GgufType type = read_type(c, "a metadata value type", key);
    GgufValue value = read_value(c, type, key, 0, budget);
    g.meta_index_.emplace(key, g.metadata_.size());
    g.metadata_.emplace_back(std::move(key), std::move(value));
  }
  uint32_t alignment = kDefaultAlignment;
  if (const GgufValue* a = g.find("general.alignment")) {
    if (a->type != GgufType::UINT32)
      c.fail("general.alignment is {}, expected u32", value_type_string(*a));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      c.fail("general.alignment {} is not a power of two", a->u);
    alignment = uint32_t(a->u);
  }

  // Tensor infos.
  g.tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; k++) {
    GgufTensorInfo t;
    t.name = c.read_string("a tensor name");
    if (t.name.empty()) c.fail("tensor {} has an empty name", k);
    if (g.tensor_index_.count(t.name)) c.fail("tensor '{}' appears twice", t.name);
    const uint32_t n_dims = c.read<uint32_t>("a tensor's dimension count");
    if (n_dims > kMaxDims)
      c.fail("tensor '{}' has {} dimensions, at most {} are allowed", t.name, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      const uint64_t dim = c.read<uint64_t>("a tensor dimension");
      if (dim > uint64_t(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(numel, dim, &numel) ||
          numel > uint64_t(std::numeric_limits<int64_t>::max()))
        c.fail("tensor '{}': dimension {} = {} makes the element count overflow", t.name, d, dim);
      t.dims.push_back(int64_t(dim));
    }
    const uint32_t type = c.read<uint32_t>("a tensor type");
    const GgmlTypeTraits* traits = ggml_type_traits(type);
    if (!traits) c.fail("tensor '{}' has unknown ggml type {}", t.name, type);
    t.type = GgmlType(type);
    if (!t.dims.empty() && t.dims[0] % traits->block != 0)
      c.fail("tensor '{}' of type {}: row length {} is not a multiple of the block size {}",
             t.name, traits->name, t.dims[0], traits->block);
    if (numel % uint64_t(traits->block) != 0)
      c.fail("tensor '{}' of type {}: {} elements do not fill whole blocks of {}", t.name,
             traits->name, numel, traits->block);
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / uint64_t(traits->block), uint64_t(traits->block_bytes),
                               &nbytes))
      c.fail("tensor '{}': size in bytes overflows", t.name);
    t.nbytes = size_t(nbytes);
    t.offset = c.read<uint64_t>("a tensor data offset");
    if (t.offset % alignment != 0)
      c.fail("tensor '{}': data offset {} is not a multiple of the alignment {}", t.name,
             t.offset, alignment);
    g.tensor_index_.emplace(t.name, g.tensors_.size());
    g.tensors_.push_back(std::move(t));
  }

  // Tensor data: starts at the next multiple of the alignment after the infos.
  const size_t header_end = c.pos();
  const uint64_t data_start = (uint64_t(header_end) + alignment - 1) / alignment * alignment;
  if (!g.tensors_.empty() && data_start > g.file_.size())
    c.fail("the tensor data section would start at byte {}, past the end of the file ({} bytes)",
           data_start, g.file_.size());
  const uint64_t data_size = g.tensors_.empty() ? 0 : g.file_.size() - data_start;
  for (GgufTensorInfo& t : g.tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw Error("{}: invalid GGUF file: tensor '{}' ({} {}, {} bytes) at data offset {} ends "
                  "past the end of the file (the data section has {} bytes; truncated file?)",
                  path, t.name, ggml_type_name(t.type), dims_string(t.dims), t.nbytes, t.offset,
                  data_size);
    t.data = g.file_.data() + data_start + t.offset;
  }
  return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = meta_index_.find(key);
  return it == meta_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("{}: GGUF metadata key '{}' is missing", path(), key);
  return *v;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<float> GgufFile::read_f32(const GgufTensorInfo& tensor) const {
  if (!ggml_can_dequantize(tensor.type))
    throw Error("{}: tensor '{}' has type {}, which distill cannot convert to f32 (supported: "
                "f32, f16, bf16, f64, i8, i16, i32, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q6_K)",
                path(), tensor.name, ggml_type_name(tensor.type));
  std::vector<float> out(size_t(tensor.numel()));
  ggml_dequantize(tensor.type, tensor.data, out.data(), tensor.numel());
  return out;
}

}  // namespace distill
