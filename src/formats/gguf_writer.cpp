// GGUF writing: version 3, little-endian, tensors in insertion order, each tensor's data padded
// to the alignment so that offset[i+1] = offset[i] + pad(nbytes[i]) — the layout ggml's own
// reader insists on.
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "formats/ggml_quant.h"
#include "formats/gguf.h"

namespace distill {

namespace {

constexpr uint32_t kAlignment = 32;

class ByteSink {
 public:
  explicit ByteSink(std::FILE* f) : f_(f) {}
  void bytes(const void* p, size_t n) {
    write_bytes(f_, p, n);
    written_ += n;
  }
  template <typename T>
  void pod(T v) {
    bytes(&v, sizeof(T));
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const uint8_t zeros[64] = {};
    while (written_ % alignment != 0) {
      const size_t n = std::min<size_t>(sizeof(zeros), alignment - written_ % alignment);
      bytes(zeros, n);
    }
  }

 private:
  std::FILE* f_;
  uint64_t written_ = 0;
};

void write_value(ByteSink& out, const GgufValue& v, const std::string& key) {
  switch (v.type) {
    case GgufType::UINT8: out.pod<uint8_t>(uint8_t(v.u)); break;
    case GgufType::INT8: out.pod<int8_t>(int8_t(v.i)); break;
    case GgufType::UINT16: out.pod<uint16_t>(uint16_t(v.u)); break;
    case GgufType::INT16: out.pod<int16_t>(int16_t(v.i)); break;
    case GgufType::UINT32: out.pod<uint32_t>(uint32_t(v.u)); break;
    case GgufType::INT32: out.pod<int32_t>(int32_t(v.i)); break;
    case GgufType::UINT64: out.pod<uint64_t>(v.u); break;
    case GgufType::INT64: out.pod<int64_t>(v.i); break;
    case GgufType::FLOAT32: out.pod<float>(float(v.f)); break;
    case GgufType::FLOAT64: out.pod<double>(v.f); break;
    case GgufType::BOOL: out.pod<uint8_t>(v.u ? 1 : 0); break;
    case GgufType::STRING: out.string(v.s); break;
    case GgufType::ARRAY:
      out.pod<uint32_t>(uint32_t(v.array_type));
      out.pod<uint64_t>(v.array.size());
      for (const GgufValue& e : v.array) {
        if (e.type != v.array_type)
          throw Error("GGUF metadata '{}': array of {} holds a {} element", key,
                      gguf_type_name(v.array_type), gguf_type_name(e.type));
        write_value(out, e, key);
      }
      break;
    default:
      throw Error("GGUF metadata '{}': invalid value type {}", key, uint32_t(v.type));
  }
}

}  // namespace

void GgufWriter::set(std::string key, GgufValue value) {
  if (key.empty()) throw Error("GGUF metadata key must not be empty");
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, const std::vector<int64_t>& shape, const float* data,
                            GgmlType type) {
  if (name.empty()) throw Error("GGUF tensor name must not be empty");
  for (const Tensor& t : tensors_)
    if (t.name == name) throw Error("GGUF tensor '{}' added twice", name);
  if (shape.empty() || shape.size() > 4)
    throw Error("GGUF tensor '{}' has {} dimensions; 1 to 4 are supported", name, shape.size());
  if (!ggml_can_quantize(type))
    throw Error("GGUF tensor '{}': cannot write type {} (supported: f32, f16, bf16, q8_0)", name,
                ggml_type_name(type));
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("GGUF tensor '{}' has a negative dimension", name);
    numel *= d;
  }
  Tensor t;
  t.name = std::move(name);
  t.dims.assign(shape.rbegin(), shape.rend());  // ggml order: innermost first
  t.type = type;
  const GgmlTypeTraits* traits = ggml_type_traits(uint32_t(type));
  if (t.dims[0] % traits->block != 0)
    throw Error("GGUF tensor '{}': row length {} is not a multiple of the {} block size {}",
                t.name, t.dims[0], traits->name, traits->block);
  t.bytes.resize(ggml_type_bytes(type, numel));
  ggml_quantize(type, data, t.bytes.data(), numel);
  tensors_.push_back(std::move(t));
}

void GgufWriter::write(const std::string& path) const {
  // general.alignment first among our keys unless the caller set it; we always write 32.
  std::vector<std::pair<std::string, GgufValue>> metadata = metadata_;
  bool has_alignment = false;
  for (auto& [k, v] : metadata)
    if (k == "general.alignment") {
      v = GgufValue::of_u32(kAlignment);
      has_alignment = true;
    }
  if (!has_alignment) metadata.emplace_back("general.alignment", GgufValue::of_u32(kAlignment));

  write_file_atomic(path, [&](std::FILE* f) {
    ByteSink out(f);
    out.bytes("GGUF", 4);
    out.pod<uint32_t>(3);
    out.pod<uint64_t>(tensors_.size());
    out.pod<uint64_t>(metadata.size());
    for (const auto& [key, value] : metadata) {
      out.string(key);
      out.pod<uint32_t>(uint32_t(value.type));
      write_value(out, value, key);
    }
    uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      out.string(t.name);
      out.pod<uint32_t>(uint32_t(t.dims.size()));
      for (int64_t d : t.dims) out.pod<uint64_t>(uint64_t(d));
      out.pod<uint32_t>(uint32_t(t.type));
      out.pod<uint64_t>(offset);
      offset += (t.bytes.size() + kAlignment - 1) / kAlignment * kAlignment;
    }
    out.pad_to(kAlignment);
    for (const Tensor& t : tensors_) {
      out.bytes(t.bytes.data(), t.bytes.size());
      out.pad_to(kAlignment);
    }
  });
}

}  // namespace distill
