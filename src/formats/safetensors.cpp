#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace distill {

namespace {

using Json = nlohmann::ordered_json;  // keeps header order, which tensors() promises

// Headers beyond this are not real checkpoints; the reference implementation uses the same limit.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";
// Written into the index and every shard of a sharded save; see write_safetensors_sharded.
constexpr const char* kSaveIdKey = "distill_save_id";

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// numel * element size, or nullopt on overflow (possible with a hostile header).
std::optional<uint64_t> checked_nbytes(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  }
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(dtype_size(dtype)), &n)) return std::nullopt;
  if (n > std::numeric_limits<size_t>::max() / 2) return std::nullopt;
  return n;
}

std::string dtype_list() {
  std::string names;
  for (int i = 0; i <= static_cast<int>(DType::F64); ++i) {
    if (!names.empty()) names += ", ";
    names += dtype_name(static_cast<DType>(i));
  }
  return names;
}

std::vector<float> tensor_to_f32(const TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(out.data(), t.data, t.dtype, out.size());
  return out;
}

// One tensor's header entry, checked against the data buffer of `buffer_size` bytes.
TensorInfo parse_tensor_entry(const std::string& path, const std::string& name, const Json& e,
                              const uint8_t* buffer, uint64_t buffer_size, uint64_t* begin_out) {
  auto fail = [&](const std::string& why) -> Error {
    return Error("{}: tensor '{}': {}", path, name, why);
  };
  if (!e.is_object()) {
    throw fail(fmt::format("expected an object with dtype, shape and data_offsets, found {}",
                           e.type_name()));
  }
  TensorInfo t;
  t.name = name;

  auto dtype_it = e.find("dtype");
  if (dtype_it == e.end()) throw fail("missing \"dtype\"");
  if (!dtype_it->is_string()) {
    throw fail(fmt::format("dtype must be a string, found {}", dtype_it->type_name()));
  }
  const auto& dtype_str = dtype_it->get_ref<const std::string&>();
  std::optional<DType> dtype = dtype_from_name(dtype_str);
  if (!dtype) {
    throw fail(fmt::format("unknown dtype '{}' (expected one of {})", dtype_str, dtype_list()));
  }
  t.dtype = *dtype;

  auto shape_it = e.find("shape");
  if (shape_it == e.end()) throw fail("missing \"shape\"");
  if (!shape_it->is_array()) {
    throw fail(fmt::format("shape must be a list of non-negative integers, found {}",
                           shape_it->dump()));
  }
  for (const Json& d : *shape_it) {
    // nlohmann parses non-negative integers as unsigned, negative ones as signed.
    if (!d.is_number_unsigned() ||
        d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw fail(fmt::format("shape must be a list of non-negative integers, found {}",
                             shape_it->dump()));
    }
    t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }

  auto off_it = e.find("data_offsets");
  if (off_it == e.end()) throw fail("missing \"data_offsets\"");
  if (!off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned()) {
    throw fail(fmt::format("data_offsets must be [begin, end] with non-negative integers, found {}",
                           off_it->dump()));
  }
  const uint64_t begin = (*off_it)[0].get<uint64_t>();
  const uint64_t end = (*off_it)[1].get<uint64_t>();
  if (end < begin) throw fail(fmt::format("data_offsets [{}, {}]: end < begin", begin, end));

  std::optional<uint64_t> nbytes = checked_nbytes(t.shape, t.dtype);
  if (!nbytes) {
    throw fail(fmt::format("shape {} of {} overflows the byte size", shape_string(t.shape),
                           dtype_str));
  }
  if (*nbytes != end - begin) {
    throw fail(fmt::format("size mismatch: shape {} of {} needs {} bytes, data_offsets [{}, {}] "
                           "span {}",
                           shape_string(t.shape), dtype_str, *nbytes, begin, end, end - begin));
  }
  if (end > buffer_size) {
    throw fail(fmt::format("data_offsets [{}, {}] run past the end of the data buffer ({} bytes): "
                           "file truncated?",
                           begin, end, buffer_size));
  }
  t.data = buffer + begin;
  t.nbytes = static_cast<size_t>(*nbytes);
  *begin_out = begin;
  return t;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile st;
  st.file_ = MappedFile::open(path);
  const uint8_t* bytes = st.file_.data();
  const uint64_t file_size = st.file_.size();
  if (file_size < 8) {
    throw Error("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length",
                path, file_size);
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > kMaxHeaderBytes) {
    throw Error("{}: header length {} is larger than the {}-byte limit: not a safetensors file?",
                path, header_len, kMaxHeaderBytes);
  }
  if (header_len > file_size - 8) {
    throw Error("{}: header length {} exceeds the {} bytes after the length field: file "
                "truncated?",
                path, header_len, file_size - 8);
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  const uint8_t* buffer = bytes + 8 + header_len;
  const uint64_t buffer_size = file_size - 8 - header_len;

  // nlohmann keeps the last of duplicate keys silently; a duplicate tensor name is a broken file,
  // so top-level keys are collected as they are parsed.
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && duplicate.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(header, header + header_len, on_event);
  } catch (const Json::exception& e) {
    throw Error("{}: header is not valid JSON: {}", path, e.what());
  }
  if (!root.is_object()) {
    throw Error("{}: header must be a JSON object, found {}", path, root.type_name());
  }
  if (!duplicate.empty()) {
    throw Error("{}: tensor '{}' appears twice in the header", path, duplicate);
  }

  struct Span {
    uint64_t begin, end;
    size_t tensor;
  };
  std::vector<Span> spans;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // written by some tools (e.g. ollama's fixtures)
      if (!value.is_object()) {
        throw Error("{}: __metadata__ must be an object of strings, found {}", path,
                    value.type_name());
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          throw Error("{}: __metadata__ '{}' must be a string, found {}", path, mk, mv.dump());
        }
        st.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    uint64_t begin = 0;
    st.tensors_.push_back(parse_tensor_entry(path, key, value, buffer, buffer_size, &begin));
    const TensorInfo& t = st.tensors_.back();
    st.index_.emplace(t.name, st.tensors_.size() - 1);
    if (t.nbytes > 0) spans.push_back({begin, begin + t.nbytes, st.tensors_.size() - 1});
  }

  // Holes are tolerated, overlaps are not: after sorting by begin, a tensor overlaps an earlier
  // one exactly when it begins before the furthest end seen so far.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const Span* furthest = nullptr;
  for (const Span& s : spans) {
    if (furthest != nullptr && s.begin < furthest->end) {
      throw Error("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", path,
                  st.tensors_[furthest->tensor].name, furthest->begin, furthest->end,
                  st.tensors_[s.tensor].name, s.begin, s.end);
    }
    if (furthest == nullptr || s.end > furthest->end) furthest = &s;
  }
  return st;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) {
    throw Error("{}: no tensor named '{}' ({} tensors in the file)", path(), name, tensors_.size());
  }
  return *t;
}

std::vector<float> SafetensorsFile::read_f32(std::string_view name) const {
  return tensor_to_f32(get(name));
}

// ---------------------------------------------------------------------------------------------
// Writer

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  if (name.empty()) throw Error("safetensors writer: empty tensor name");
  if (name == "__metadata__") {
    throw Error("safetensors writer: '__metadata__' is reserved and cannot name a tensor");
  }
  try {
    (void)Json(name).dump();  // the header must be valid JSON: reject invalid UTF-8 now
  } catch (const Json::exception&) {
    throw Error("safetensors writer: tensor name '{}' is not valid UTF-8", name);
  }
  if (index_.count(name) != 0) {
    throw Error("safetensors writer: tensor '{}' added twice", name);
  }
  std::optional<uint64_t> expected = checked_nbytes(shape, dtype);
  if (!expected) {
    throw Error("safetensors writer: tensor '{}': shape {} must be non-negative and not overflow",
                name, shape_string(shape));
  }
  if (*expected != nbytes) {
    throw Error("safetensors writer: tensor '{}': shape {} of {} needs {} bytes, got {}", name,
                shape_string(shape), dtype_name(dtype), *expected, nbytes);
  }
  if (data == nullptr && nbytes > 0) {
    throw Error("safetensors writer: tensor '{}': null data for {} bytes", name, nbytes);
  }
  index_.emplace(name, tensors_.size());
  data_bytes_ += nbytes;
  tensors_.push_back({std::move(name), dtype, std::move(shape), data, nbytes});
}

void SafetensorsWriter::add(const TensorRef& t) {
  add(t.name, t.dtype, t.shape, t.data, t.nbytes);
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  try {
    (void)Json({{key, value}}).dump();
  } catch (const Json::exception&) {
    throw Error("safetensors writer: metadata '{}' is not valid UTF-8", key);
  }
  metadata_[std::move(key)] = std::move(value);
}

SafetensorsWriter::Layout SafetensorsWriter::layout() const {
  Layout l;
  l.order.resize(tensors_.size());
  for (size_t i = 0; i < l.order.size(); ++i) l.order[i] = i;
  std::stable_sort(l.order.begin(), l.order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors_[a].dtype) > dtype_size(tensors_[b].dtype);
  });
  std::vector<uint64_t> begin(tensors_.size());
  uint64_t offset = 0;
  for (size_t i : l.order) {
    begin[i] = offset;
    offset += tensors_[i].nbytes;
  }
  Json header = Json::object();
  // Like the reference writer: __metadata__ first, and only when there is some.
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorRef& t = tensors_[i];
    Json entry = Json::object();
    entry["dtype"] = dtype_name(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = Json::array({begin[i], begin[i] + t.nbytes});
    header[t.name] = std::move(entry);
  }
  l.header = header.dump();
  // Pad with spaces (valid JSON whitespace) so the data buffer starts 8-byte aligned.
  l.header.append((8 - l.header.size() % 8) % 8, ' ');
  return l;
}

size_t SafetensorsWriter::total_bytes() const { return 8 + layout().header.size() + data_bytes_; }

void SafetensorsWriter::write(const std::string& path) const {
  const Layout l = layout();
  write_file_atomic(path, [&](std::FILE* f) {
    const uint64_t header_len = l.header.size();
    write_bytes(f, &header_len, 8);  // little-endian host (static_assert in dtype.cpp)
    write_bytes(f, l.header.data(), l.header.size());
    for (size_t i : l.order) write_bytes(f, tensors_[i].data, tensors_[i].nbytes);
  });
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

namespace {

std::string shard_file_name(size_t i, size_t n) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
}

// A file a save of ours may have left in a model directory (and so may remove as stale).
bool is_model_file_name(const std::string& name) {
  if (name == kSingleFileName || name == kIndexFileName) return true;
  // model-DDDDD-of-DDDDD.safetensors
  if (name.size() != 32 || name.rfind("model-", 0) != 0 || name.compare(11, 4, "-of-") != 0 ||
      name.compare(20, 12, ".safetensors") != 0) {
    return false;
  }
  auto digits = [&](size_t pos) {
    return std::all_of(name.begin() + pos, name.begin() + pos + 5,
                       [](char c) { return c >= '0' && c <= '9'; });
  };
  return digits(6) && digits(15);
}

std::string random_save_id() {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd());
  return fmt::format("{:016x}", rng());
}

}  // namespace

std::vector<std::string> write_safetensors_sharded(
    const std::string& dir, const std::vector<TensorRef>& tensors, size_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  if (max_shard_bytes == 0) throw Error("{}: max_shard_bytes must be positive", dir);
  // transformers refuses a safetensors file whose __metadata__ lacks "format" (and a sharded save
  // always has metadata: the save id), so default it to what save_pretrained writes.
  std::map<std::string, std::string> file_metadata = metadata;
  file_metadata.emplace("format", "pt");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("{}: cannot create directory: {}", dir, ec.message());

  // Greedy, in order, as transformers does: start a new shard when the next tensor would push a
  // non-empty shard past the limit.
  std::vector<std::vector<size_t>> groups(1);
  size_t group_bytes = 0;
  uint64_t total_bytes = 0;
  std::set<std::string_view> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!names.insert(tensors[i].name).second) {
      throw Error("{}: tensor '{}' given twice", dir, tensors[i].name);
    }
    if (!groups.back().empty() && group_bytes + tensors[i].nbytes > max_shard_bytes) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(i);
    group_bytes += tensors[i].nbytes;
    total_bytes += tensors[i].nbytes;
  }

  std::vector<std::string> written;
  if (groups.size() == 1) {
    SafetensorsWriter w;
    for (const auto& [k, v] : file_metadata) w.set_metadata(k, v);
    for (const TensorRef& t : tensors) w.add(t);
    w.write(dir + "/" + kSingleFileName);
    written.push_back(kSingleFileName);
  } else {
    // Shard names repeat between saves with the same shard count, so a crash midway through
    // overwriting them would leave old and new shards under one index. The save id makes that
    // state an error in SafetensorsModel::open instead of a silently mixed model.
    const std::string save_id = random_save_id();
    Json weight_map = Json::object();
    for (size_t s = 0; s < groups.size(); ++s) {
      const std::string name = shard_file_name(s, groups.size());
      SafetensorsWriter w;
      for (const auto& [k, v] : file_metadata) w.set_metadata(k, v);
      w.set_metadata(kSaveIdKey, save_id);
      for (size_t i : groups[s]) {
        w.add(tensors[i]);
        weight_map[tensors[i].name] = name;
      }
      w.write(dir + "/" + name);
      written.push_back(name);
    }
    Json index_metadata = Json::object();
    index_metadata["total_size"] = total_bytes;
    index_metadata[kSaveIdKey] = save_id;
    Json index = Json::object();
    index["metadata"] = std::move(index_metadata);
    index["weight_map"] = std::move(weight_map);
    const std::string text = index.dump(2) + "\n";
    write_file_atomic(dir + "/" + kIndexFileName, text.data(), text.size());
    written.push_back(kIndexFileName);
  }

  // Only now, with the new save complete, remove what an earlier save left. Loaders prefer
  // model.safetensors over the index, so every intermediate state reads as one whole save.
  std::vector<std::string> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (is_model_file_name(name) &&
        std::find(written.begin(), written.end(), name) == written.end()) {
      stale.push_back(std::move(name));
    }
  }
  if (ec) throw Error("{}: cannot list directory: {}", dir, ec.message());
  // The index first: without it, leftover shards are inert.
  std::stable_partition(stale.begin(), stale.end(),
                        [](const std::string& name) { return name == kIndexFileName; });
  for (const std::string& name : stale) {
    if (!fs::remove(dir + "/" + name, ec) && ec) {
      throw Error("{}/{}: cannot remove file of an earlier save: {}", dir, name, ec.message());
    }
  }
  if (!stale.empty()) fsync_dir(dir);
  return written;
}

// ---------------------------------------------------------------------------------------------
// Model (single file or index + shards)

SafetensorsModel SafetensorsModel::open(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  SafetensorsModel model;
  std::error_code ec;
  std::string index_path;
  if (fs::is_directory(dir_or_file, ec)) {
    const std::string single = dir_or_file + "/" + kSingleFileName;
    if (file_exists(single)) {
      model.path_ = single;
    } else if (file_exists(dir_or_file + "/" + kIndexFileName)) {
      index_path = dir_or_file + "/" + kIndexFileName;
    } else {
      throw Error("{}: no {} or {} in this directory", dir_or_file, kSingleFileName,
                  kIndexFileName);
    }
  } else if (dir_or_file.size() >= 5 && dir_or_file.ends_with(".json")) {
    index_path = dir_or_file;
  } else {
    model.path_ = dir_or_file;
  }

  if (index_path.empty()) {
    model.shards_.push_back(SafetensorsFile::open(model.path_));
    for (const TensorInfo& t : model.shards_[0].tensors()) {
      model.index_.emplace(t.name, model.tensors_.size());
      model.tensors_.push_back(t);
    }
    return model;
  }

  model.path_ = index_path;
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(read_file_text(index_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("{}: not valid JSON: {}", index_path, e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw Error("{}: expected an object with a \"weight_map\" object", index_path);
  }
  std::string save_id;
  if (index.contains("metadata") && index["metadata"].is_object()) {
    auto it = index["metadata"].find(kSaveIdKey);
    if (it != index["metadata"].end() && it->is_string()) save_id = it->get<std::string>();
  }
  // shard file -> tensors the index puts there; std::map so shards open in name (= shard) order.
  std::map<std::string, std::set<std::string, std::less<>>> shard_tensors;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      throw Error("{}: weight_map entry for '{}' must be a file name, found {}", index_path, tensor,
                  file.dump());
    }
    const auto& name = file.get_ref<const std::string&>();
    // Shards live beside the index; a path here would let an index point anywhere.
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
      throw Error("{}: weight_map entry for '{}' names '{}', not a file beside the index",
                  index_path, tensor, name);
    }
    shard_tensors[name].insert(tensor);
  }
  const std::string dir = fs::path(index_path).parent_path().string();
  for (const auto& [file, names] : shard_tensors) {
    const std::string shard_path = dir.empty() ? file : dir + "/" + file;
    try {
      model.shards_.push_back(SafetensorsFile::open(shard_path));
    } catch (const Error& e) {
      throw Error("{}: shard '{}' named in weight_map: {}", index_path, file, e.what());
    }
    const SafetensorsFile& shard = model.shards_.back();
    if (!save_id.empty()) {
      auto it = shard.metadata().find(kSaveIdKey);
      const std::string found = it == shard.metadata().end() ? "none" : it->second;
      if (found != save_id) {
        throw Error("{}: shard {} is from a different save (save id {}, the index has {}): the "
                    "directory was left by an interrupted save",
                    index_path, shard_path, found, save_id);
      }
    }
    for (const std::string& name : names) {
      if (shard.find(name) == nullptr) {
        throw Error("{}: weight_map puts tensor '{}' in {}, which has no such tensor", index_path,
                    name, shard_path);
      }
    }
    for (const TensorInfo& t : shard.tensors()) {
      if (names.count(t.name) == 0) continue;
      model.index_.emplace(t.name, model.tensors_.size());
      model.tensors_.push_back(t);
    }
  }
  return model;
}

const TensorInfo* SafetensorsModel::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsModel::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) {
    throw Error("{}: no tensor named '{}' ({} tensors in the model)", path_, name,
                tensors_.size());
  }
  return *t;
}

std::vector<float> SafetensorsModel::read_f32(std::string_view name) const {
  return tensor_to_f32(get(name));
}

const std::map<std::string, std::string>& SafetensorsModel::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return shards_.empty() ? kEmpty : shards_[0].metadata();
}

}  // namespace distill
