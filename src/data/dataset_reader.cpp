// DatasetReader and the records.jsonl scan shared with the writer's resume.
#include <cctype>
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "data/dataset.h"

namespace distill {

namespace {

uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::string lowercase(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::vector<RecordLine> scan_records_jsonl(const char* text, size_t size, const std::string& path,
                                           uint64_t shard_header_size, size_t* complete_bytes) {
  std::vector<RecordLine> lines;
  size_t pos = 0;
  int prev_shard = -1;
  uint64_t prev_end = 0;
  while (pos < size) {
    const char* nl = static_cast<const char*>(std::memchr(text + pos, '\n', size - pos));
    if (nl == nullptr) break;  // a line still being written (or cut by a crash): not a record
    const size_t line_no = lines.size() + 1;
    const size_t len = size_t(nl - (text + pos));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text + pos, text + pos + len);
    } catch (const nlohmann::json::exception& e) {
      throw Error("{} line {}: not JSON: {}", path, line_no, e.what());
    }
    if (!j.is_object()) throw Error("{} line {}: not a JSON object", path, line_no);
    auto field = [&](const char* key) -> uint64_t {
      const auto it = j.find(key);
      if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 0)
        throw Error("{} line {}: field '{}' is missing or not a non-negative integer", path,
                    line_no, key);
      return it->get<uint64_t>();
    };
    RecordLine r;
    const uint64_t index = field("index");
    if (index != line_no - 1)
      throw Error("{} line {}: index is {}, expected {} (records are listed in order, once each)",
                  path, line_no, index, line_no - 1);
    const uint64_t shard = field("shard");
    r.offset = field("offset");
    r.bytes = field("bytes");
    r.num_tokens = int64_t(field("num_tokens"));
    if (const auto it = j.find("id"); it != j.end()) {
      if (!it->is_string()) throw Error("{} line {}: field 'id' is not a string", path, line_no);
      r.id = it->get<std::string>();
    }
    if (const auto it = j.find("sample"); it != j.end()) {
      if (!it->is_number_integer())
        throw Error("{} line {}: field 'sample' is not an integer", path, line_no);
      r.sample = it->get<int64_t>();
    }
    // Records lie back to back, shard after shard: anything else is an edited or damaged file.
    if (int64_t(shard) == int64_t(prev_shard) + 1) {
      if (r.offset != shard_header_size)
        throw Error("{} line {}: record {} is the first of shard {} but at offset {}, expected "
                    "{} (the end of the shard header)", path, line_no, index, shard, r.offset,
                    shard_header_size);
    } else if (prev_shard >= 0 && int64_t(shard) == prev_shard) {
      if (r.offset != prev_end)
        throw Error("{} line {}: record {} is at offset {} of shard {}, expected {} (the end of "
                    "record {})", path, line_no, index, r.offset, shard, prev_end, index - 1);
    } else {
      throw Error("{} line {}: record {} is in shard {}, expected shard {}", path, line_no, index,
                  shard, prev_shard < 0 ? 0 : prev_shard);
    }
    if (r.bytes < kRecordHeaderBytes + kPayloadFixedBytes)
      throw Error("{} line {}: record {} has {} bytes, fewer than a record header", path, line_no,
                  index, r.bytes);
    r.shard = int(shard);
    r.line_begin = pos;
    r.line_size = len;
    prev_shard = r.shard;
    prev_end = r.offset + r.bytes;
    lines.push_back(std::move(r));
    pos = size_t(nl - text) + 1;
  }
  *complete_bytes = pos;
  return lines;
}

DatasetReader DatasetReader::open(const std::string& dir) {
  DatasetReader rd;
  rd.dir_ = dir;
  const std::string json_path = dir + "/dataset.json";
  if (!file_exists(json_path))
    throw Error("{}: not a dataset (no dataset.json)", dir);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(json_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("{}: not JSON: {}", json_path, e.what());
  }
  rd.header_ = DatasetHeader::from_json(j, json_path);
  const uint64_t header_size = shard_header_bytes(rd.header_, 0).size();

  // No records.jsonl yet: a writer stopped between creating dataset.json and it.
  const std::string records_path = dir + "/records.jsonl";
  if (file_exists(records_path)) rd.records_file_ = MappedFile::open(records_path);
  size_t complete = 0;
  try {
    rd.records_ = scan_records_jsonl(reinterpret_cast<const char*>(rd.records_file_.data()),
                                     rd.records_file_.size(), records_path, header_size,
                                     &complete);
  } catch (const Error&) {
    // A shard written with another tokenizer fingerprint (of another length) shows up first as
    // records at unexpected offsets: name the real problem when that is it.
    if (const std::string first = dir + "/" + shard_file_name(0); file_exists(first)) {
      const MappedFile f = MappedFile::open(first);
      shard_header_check(f.data(), f.size(), first, rd.header_, 0);
    }
    throw;
  }

  const int num_shards = rd.records_.empty() ? 0 : rd.records_.back().shard + 1;
  for (int s = 0; s < num_shards; s++) {
    const std::string path = dir + "/" + shard_file_name(s);
    rd.shards_.push_back(MappedFile::open(path));
    const MappedFile& f = rd.shards_.back();
    shard_header_check(f.data(), f.size(), path, rd.header_, s);
  }
  for (size_t i = 0; i < rd.records_.size(); i++) {
    const RecordLine& r = rd.records_[i];
    const MappedFile& f = rd.shards_[r.shard];
    const std::string& path = f.path();
    if (r.offset + r.bytes > f.size())
      throw Error("{}: record {} at offset {} is truncated: expected {} bytes, found {}", path, i,
                  r.offset, r.bytes, f.size() > r.offset ? f.size() - r.offset : 0);
    const uint8_t* p = f.data() + r.offset;
    if (get_u32(p) != kRecordMagic)
      throw Error("{}: record {} at offset {}: bad record magic {:#010x} (expected {:#010x}, "
                  "\"DREC\")", path, i, r.offset, get_u32(p), kRecordMagic);
    if (uint64_t(get_u32(p + 4)) + kRecordHeaderBytes != r.bytes)
      throw Error("{}: record {} at offset {}: its header says {} bytes, records.jsonl line {} "
                  "says {}", path, i, r.offset, uint64_t(get_u32(p + 4)) + kRecordHeaderBytes,
                  i + 1, r.bytes);
  }
  return rd;
}

uint64_t DatasetReader::shard_bytes() const {
  uint64_t total = 0;
  for (const MappedFile& f : shards_) total += f.size();
  return total;
}

void DatasetReader::read(int64_t i, DatasetEntry& out) const {
  if (i < 0 || i >= size())
    throw Error("dataset {}: record {} does not exist ({} records)", dir_, i, size());
  const RecordLine& r = records_[size_t(i)];
  const MappedFile& f = shards_[r.shard];
  const uint8_t* payload = f.data() + r.offset + kRecordHeaderBytes;
  const uint64_t size = r.bytes - kRecordHeaderBytes;
  auto fail = [&](const std::string& why) {
    return Error("{}: record {} at offset {}: {}", f.path(), i, r.offset, why);
  };
  const uint32_t stored = get_u32(f.data() + r.offset + 8), computed = crc32(payload, size);
  if (stored != computed)
    throw fail(fmt::format("checksum mismatch (stored {:#010x}, computed {:#010x}): the record "
                           "is corrupt", stored, computed));
  uint64_t index;
  std::memcpy(&index, payload, 8);
  const uint32_t n = get_u32(payload + 8), prompt = get_u32(payload + 12),
                 first = get_u32(payload + 16);
  if (index != uint64_t(i)) throw fail(fmt::format("its header says index {}", index));
  if (int64_t(n) != r.num_tokens || prompt > n || first > n)
    throw fail(fmt::format("{} tokens, prompt {}, first target {} (records.jsonl says {} tokens)",
                           n, prompt, first, r.num_tokens));
  const int64_t V = header_.vocab_size;
  const size_t id_bytes = V <= 65536 ? 2 : 4;
  if (kPayloadFixedBytes + uint64_t(n) * id_bytes > size)
    throw fail(fmt::format("{} token ids do not fit in {} bytes", n, size));
  out.index = i;
  out.prompt_tokens = int32_t(prompt);
  out.first_target = int32_t(first);
  out.tokens.resize(n);
  const uint8_t* ids = payload + kPayloadFixedBytes;
  for (uint32_t t = 0; t < n; t++) {
    uint32_t v;
    if (id_bytes == 2) {
      uint16_t h;
      std::memcpy(&h, ids + 2 * t, 2);
      v = h;
    } else {
      v = get_u32(ids + 4 * t);
    }
    if (v >= uint64_t(V))
      throw fail(fmt::format("token {} is {}, outside the vocabulary ({})", t, v, V));
    out.tokens[t] = int32_t(v);
  }
  const size_t at = kPayloadFixedBytes + size_t(n) * id_bytes;
  size_t used;
  try {
    used = decode_topk_rows(header_.encoding, payload + at, size - at, int(n - first), header_.k,
                            V, out.rows);
  } catch (const Error& e) {
    throw fail(e.what());
  }
  if (at + used != size)
    throw fail(fmt::format("{} bytes after the teacher rows", size - at - used));
}

DatasetEntry DatasetReader::read(int64_t i) const {
  DatasetEntry e;
  read(i, e);
  return e;
}

nlohmann::json DatasetReader::record_json(int64_t i) const {
  if (i < 0 || i >= size())
    throw Error("dataset {}: record {} does not exist ({} records)", dir_, i, size());
  const RecordLine& r = records_[size_t(i)];
  const char* p = reinterpret_cast<const char*>(records_file_.data()) + r.line_begin;
  return nlohmann::json::parse(p, p + r.line_size);
}

void DatasetReader::verify() const {
  DatasetEntry e;
  for (int64_t i = 0; i < size(); i++) read(i, e);
}

void DatasetReader::check_compatible(const std::string& tokenizer_fingerprint,
                                     int64_t vocab_size) const {
  if (lowercase(tokenizer_fingerprint) != header_.tokenizer_fingerprint)
    throw Error("dataset {} uses tokenizer fingerprint {} but the student's tokenizer is {}", dir_,
                header_.tokenizer_fingerprint, lowercase(tokenizer_fingerprint));
  if (vocab_size != header_.vocab_size)
    throw Error("dataset {} has a vocabulary of {} tokens but the student's tokenizer has {}",
                dir_, header_.vocab_size, vocab_size);
}

}  // namespace distill
