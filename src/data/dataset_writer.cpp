// DatasetWriter, dataset.json and the shard format (see data/dataset.h for the layout).
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "data/dataset.h"

namespace distill {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int b = 0; b < 8; b++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

uint32_t get_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string lowercase(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

uint32_t token_id_bytes(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// write(2) until done; EINTR is retried, anything else is an error naming `path`.
void pwrite_all(int fd, const uint8_t* data, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, off_t(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("{}: write failed: {}", path, std::strerror(errno));
    }
    data += w;
    n -= size_t(w);
    offset += uint64_t(w);
  }
}

void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error("{}: write failed: {}", path, std::strerror(errno));
    }
    data += w;
    n -= size_t(w);
  }
}

void fsync_fd(int fd, const std::string& path) {
  if (::fsync(fd) != 0) throw Error("{}: fsync failed: {}", path, std::strerror(errno));
}

void truncate_fd(int fd, uint64_t size, const std::string& path) {
  if (::ftruncate(fd, off_t(size)) != 0)
    throw Error("{}: cannot truncate to {} bytes: {}", path, size, std::strerror(errno));
  fsync_fd(fd, path);
}

int open_fd(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("{}: cannot open: {}", path, std::strerror(errno));
  return fd;
}

// Shard number of "shard-NNNNN.bin", or -1.
int shard_number(const std::string& name) {
  if (name.size() != 15 || name.rfind("shard-", 0) != 0 || name.substr(11) != ".bin") return -1;
  int n = 0;
  for (int i = 6; i < 11; i++) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

const char* const kReservedFields[] = {
    "index",         "id",           "sample", "source", "teacher", "prompt", "completion",
    "num_tokens",    "prompt_tokens", "first_target", "shard", "offset", "bytes"};

}  // namespace

// ---- checksums and the shard header -------------------------------------------------------

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
  const auto& t = crc_table();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; i++) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string shard_file_name(int number) { return fmt::format("shard-{:05d}.bin", number); }

std::vector<uint8_t> fingerprint_bytes(const std::string& hex) {
  if (hex.empty() || hex.size() % 2 != 0)
    throw Error("tokenizer fingerprint '{}' is not a hex string of whole bytes", hex);
  std::vector<uint8_t> out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t j = i; j < i + 2; j++) {
      const char c = char(std::tolower(static_cast<unsigned char>(hex[j])));
      if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
      else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
      else throw Error("tokenizer fingerprint '{}' is not a hex string (character '{}')", hex,
                       hex[j]);
    }
    out.push_back(uint8_t(v));
  }
  return out;
}

std::vector<uint8_t> shard_header_bytes(const DatasetHeader& header, int number) {
  const std::vector<uint8_t> fp = fingerprint_bytes(header.tokenizer_fingerprint);
  std::vector<uint8_t> out(kShardMagic, kShardMagic + 8);
  put<uint32_t>(out, uint32_t(kDatasetFormatVersion));
  put<uint32_t>(out, uint32_t(44 + fp.size()));
  put<uint32_t>(out, uint32_t(number));
  put<uint32_t>(out, uint32_t(header.vocab_size));
  put<uint32_t>(out, uint32_t(header.k));
  put<uint32_t>(out, uint32_t(header.encoding));
  put<uint32_t>(out, token_id_bytes(header.vocab_size));
  put<uint32_t>(out, uint32_t(fp.size()));
  out.insert(out.end(), fp.begin(), fp.end());
  put<uint32_t>(out, crc32(out.data(), out.size()));
  return out;
}

size_t shard_header_check(const uint8_t* data, size_t size, const std::string& name,
                          const DatasetHeader& header, int number) {
  if (size < 16)
    throw Error("{}: too short for a shard header ({} bytes)", name, size);
  if (std::memcmp(data, kShardMagic, 8) != 0)
    throw Error("{}: not a distill dataset shard (bad magic)", name);
  const uint32_t version = get_u32(data + 8), hsize = get_u32(data + 12);
  if (version != uint32_t(kDatasetFormatVersion))
    throw Error("{}: shard format version {} is not supported (this build reads {})", name,
                version, kDatasetFormatVersion);
  if (hsize < 44 || hsize > size)
    throw Error("{}: header is truncated: expected {} bytes, found {}", name, hsize, size);
  const uint32_t fp_len = get_u32(data + 36);
  if (uint64_t(fp_len) + 44 != hsize)
    throw Error("{}: corrupt header: fingerprint length {} does not fit header size {}", name,
                fp_len, hsize);
  const uint32_t stored = get_u32(data + hsize - 4), computed = crc32(data, hsize - 4);
  if (stored != computed)
    throw Error("{}: header checksum mismatch (stored {:#010x}, computed {:#010x})", name, stored,
                computed);
  const std::string fp = to_hex(data + 40, fp_len);
  if (fp != lowercase(header.tokenizer_fingerprint))
    throw Error("{} was written with tokenizer fingerprint {}, dataset.json says {}", name, fp,
                header.tokenizer_fingerprint);
  const uint32_t shard = get_u32(data + 16), vocab = get_u32(data + 20), k = get_u32(data + 24),
                 enc = get_u32(data + 28), id_bytes = get_u32(data + 32);
  if (shard != uint32_t(number))
    throw Error("{}: header says shard {}, expected {}", name, shard, number);
  if (vocab != uint64_t(header.vocab_size) || k != uint32_t(header.k))
    throw Error("{}: header says vocabulary size {} and k {}, dataset.json says {} and {}", name,
                vocab, k, header.vocab_size, header.k);
  if (enc != uint32_t(header.encoding))
    throw Error("{}: header says encoding id {}, dataset.json says {} ({})", name, enc,
                uint32_t(header.encoding), logprob_encoding_name(header.encoding));
  if (id_bytes != token_id_bytes(header.vocab_size))
    throw Error("{}: header says {}-byte token ids, expected {}", name, id_bytes,
                token_id_bytes(header.vocab_size));
  return hsize;
}

// ---- dataset.json --------------------------------------------------------------------------

nlohmann::json DatasetHeader::to_json() const {
  return {{"format", "distill-dataset"},
          {"format_version", format_version},
          {"tokenizer_fingerprint", tokenizer_fingerprint},
          {"vocab_size", vocab_size},
          {"k", k},
          {"encoding", logprob_encoding_name(encoding)},
          {"teacher", teacher},
          {"sampling", sampling},
          {"created", created}};
}

DatasetHeader DatasetHeader::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error("{}: expected a JSON object", where);
  if (j.value("format", std::string()) != "distill-dataset")
    throw Error("{}: not a distill dataset header (\"format\" is not \"distill-dataset\")", where);
  auto integer = [&](const char* key, int64_t lo, int64_t hi) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer())
      throw Error("{}: field '{}' is missing or not an integer", where, key);
    const int64_t v = it->get<int64_t>();
    if (v < lo || v > hi)
      throw Error("{}: field '{}' is {}, expected a value in [{}, {}]", where, key, v, lo, hi);
    return v;
  };
  auto string = [&](const char* key) {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string())
      throw Error("{}: field '{}' is missing or not a string", where, key);
    return it->get<std::string>();
  };
  DatasetHeader h;
  h.format_version = int(integer("format_version", 1, 1 << 30));
  if (h.format_version != kDatasetFormatVersion)
    throw Error("{}: dataset format version {} is not supported (this build reads {})", where,
                h.format_version, kDatasetFormatVersion);
  h.tokenizer_fingerprint = lowercase(string("tokenizer_fingerprint"));
  try {
    fingerprint_bytes(h.tokenizer_fingerprint);
  } catch (const Error& e) {
    throw Error("{}: {}", where, e.what());
  }
  h.vocab_size = integer("vocab_size", 1, (int64_t(1) << 31) - 1);
  h.k = int(integer("k", 1, 65535));
  try {
    h.encoding = logprob_encoding_from_name(string("encoding"));
  } catch (const Error& e) {
    throw Error("{}: {}", where, e.what());
  }
  h.teacher = string("teacher");
  h.sampling = j.contains("sampling") ? j["sampling"] : nlohmann::json::object();
  h.created = string("created");
  return h;
}

// ---- the writer ----------------------------------------------------------------------------

DatasetWriter DatasetWriter::open(const std::string& dir, const DatasetHeader& header,
                                  bool resume, const DatasetWriterOptions& options) {
  fingerprint_bytes(header.tokenizer_fingerprint);
  if (header.vocab_size < 1 || header.vocab_size >= (int64_t(1) << 31))
    throw Error("dataset {}: vocabulary size {} is outside [1, 2^31)", dir, header.vocab_size);
  if (header.k < 1 || header.k > 65535)
    throw Error("dataset {}: k = {} is outside [1, 65535]", dir, header.k);
  if (options.shard_bytes == 0) throw Error("dataset {}: the shard size limit is 0", dir);

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("dataset {}: cannot create the directory: {}", dir, ec.message());

  DatasetWriter w;
  w.dir_ = dir;
  w.options_ = options;
  w.run_teacher_ = header.teacher;
  const std::string json_path = dir + "/dataset.json";
  const std::string records_path = dir + "/records.jsonl";
  if (file_exists(json_path)) {
    if (!resume)
      throw Error("dataset {} already exists (resume it, or write to another directory)", dir);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file_text(json_path));
    } catch (const nlohmann::json::exception& e) {
      throw Error("{}: not JSON: {}", json_path, e.what());
    }
    w.header_ = DatasetHeader::from_json(j, json_path);
    const DatasetHeader& h = w.header_;
    if (h.tokenizer_fingerprint != lowercase(header.tokenizer_fingerprint))
      throw Error("dataset {} was written with tokenizer fingerprint {}, this run uses {}", dir,
                  h.tokenizer_fingerprint, lowercase(header.tokenizer_fingerprint));
    if (h.vocab_size != header.vocab_size)
      throw Error("dataset {} was written with vocabulary size {}, this run uses {}", dir,
                  h.vocab_size, header.vocab_size);
    if (h.k != header.k)
      throw Error("dataset {} was written with top-k {}, this run uses {}", dir, h.k, header.k);
    if (h.encoding != header.encoding)
      throw Error("dataset {} was written with the {} encoding, this run uses {}", dir,
                  logprob_encoding_name(h.encoding), logprob_encoding_name(header.encoding));
  } else {
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("dataset.json.tmp.", 0) == 0) {  // a creation killed mid-write
        std::filesystem::remove(e.path(), ec);
        continue;
      }
      if (name == "records.jsonl" || shard_number(name) >= 0)
        throw Error("dataset {}: holds {} but no dataset.json (not a dataset this version wrote; "
                    "move it away or write elsewhere)", dir, name);
    }
    if (ec) throw Error("dataset {}: cannot list the directory: {}", dir, ec.message());
    w.header_ = header;
    w.header_.format_version = kDatasetFormatVersion;
    w.header_.tokenizer_fingerprint = lowercase(header.tokenizer_fingerprint);
    w.header_.created = utc_now();
    const std::string text =
        w.header_.to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    write_file_atomic(json_path, text.data(), text.size());
  }
  w.shard_header_size_ = shard_header_bytes(w.header_, 0).size();

  w.records_fd_ = open_fd(records_path, O_RDWR | O_CREAT | O_APPEND);
  // The lock goes with the descriptor: a killed writer's lock is released by the kernel.
  if (::flock(w.records_fd_, LOCK_EX | LOCK_NB) != 0)
    throw Error("dataset {} is being written by another process ({})", dir,
                errno == EWOULDBLOCK ? "records.jsonl is locked" : std::strerror(errno));
  fsync_dir(dir);

  // Recovery: keep the complete lines, then make the shards end where the last line says.
  const std::string text = read_file_text(records_path);
  size_t complete = 0;
  const std::vector<RecordLine> lines =
      scan_records_jsonl(text.data(), text.size(), records_path, w.shard_header_size_, &complete);
  if (complete < text.size()) {
    truncate_fd(w.records_fd_, complete, records_path);
    w.resume_.dropped_partial_line = true;
  }
  for (const RecordLine& line : lines) {
    if (!line.id) continue;
    if (!w.keys_.emplace(*line.id, line.sample).second)
      throw Error("{}: (id '{}', sample {}) appears twice; the second time on line {}",
                  records_path, *line.id, line.sample, &line - lines.data() + 1);
  }
  w.count_ = int64_t(lines.size());
  w.resume_.records = w.count_;
  const int last = lines.empty() ? -1 : lines.back().shard;

  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const int n = shard_number(e.path().filename().string());
    if (n > last) {
      std::filesystem::remove(e.path(), ec);
      if (ec) throw Error("{}: cannot remove: {}", e.path().string(), ec.message());
      w.resume_.removed_shards++;
    }
  }
  if (w.resume_.removed_shards > 0) fsync_dir(dir);

  if (last >= 0) {
    const RecordLine& tail = lines.back();
    const std::string path = dir + "/" + shard_file_name(last);
    const int fd = open_fd(path, O_RDWR);
    w.shard_fd_ = fd;
    w.shard_ = last;
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw Error("{}: cannot stat: {}", path, std::strerror(errno));
    const uint64_t size = uint64_t(st.st_size), end = tail.offset + tail.bytes;
    if (size < end)
      throw Error("{}: record {} at offset {} is truncated: expected {} bytes, found {} (its "
                  "records.jsonl line was written after the bytes were synced: the file was "
                  "damaged since)", path, w.count_ - 1, tail.offset, tail.bytes,
                  size < tail.offset ? 0 : size - tail.offset);
    // The last listed record must be intact: it is what a resumed run builds on.
    std::vector<uint8_t> buf(std::max<uint64_t>(w.shard_header_size_, tail.bytes));
    auto read_at = [&](uint64_t off, size_t n) {
      if (::pread(fd, buf.data(), n, off_t(off)) != ssize_t(n))
        throw Error("{}: read failed at offset {}", path, off);
    };
    read_at(0, w.shard_header_size_);
    shard_header_check(buf.data(), w.shard_header_size_, path, w.header_, last);
    read_at(tail.offset, tail.bytes);
    if (get_u32(buf.data()) != kRecordMagic || get_u32(buf.data() + 4) + kRecordHeaderBytes !=
                                                   tail.bytes ||
        get_u32(buf.data() + 8) != crc32(buf.data() + kRecordHeaderBytes,
                                         tail.bytes - kRecordHeaderBytes))
      throw Error("{}: record {} at offset {} is corrupt (bad magic, length or checksum)", path,
                  w.count_ - 1, tail.offset);
    if (size > end) {
      truncate_fd(fd, end, path);
      w.resume_.dropped_shard_bytes = size - end;
    }
    w.shard_size_ = end;
  }
  return w;
}

DatasetWriter::DatasetWriter(DatasetWriter&& o) noexcept { *this = std::move(o); }

DatasetWriter& DatasetWriter::operator=(DatasetWriter&& o) noexcept {
  if (this != &o) {
    close();
    dir_ = std::move(o.dir_);
    header_ = std::move(o.header_);
    options_ = o.options_;
    run_teacher_ = std::move(o.run_teacher_);
    resume_ = o.resume_;
    records_fd_ = std::exchange(o.records_fd_, -1);
    shard_fd_ = std::exchange(o.shard_fd_, -1);
    shard_ = o.shard_;
    shard_size_ = o.shard_size_;
    shard_header_size_ = o.shard_header_size_;
    count_ = o.count_;
    failed_ = o.failed_;
    keys_ = std::move(o.keys_);
  }
  return *this;
}

DatasetWriter::~DatasetWriter() { close(); }

void DatasetWriter::close() {
  if (shard_fd_ >= 0) ::close(shard_fd_);
  if (records_fd_ >= 0) ::close(records_fd_);
  shard_fd_ = records_fd_ = -1;
}

bool DatasetWriter::completed(const std::string& id, int64_t sample) const {
  return keys_.count({id, sample}) > 0;
}

void DatasetWriter::start_shard(int number) {
  if (shard_fd_ >= 0) ::close(shard_fd_);
  shard_fd_ = -1;
  const std::string path = dir_ + "/" + shard_file_name(number);
  shard_fd_ = open_fd(path, O_WRONLY | O_CREAT | O_TRUNC);
  const std::vector<uint8_t> bytes = shard_header_bytes(header_, number);
  pwrite_all(shard_fd_, bytes.data(), bytes.size(), 0, path);
  fsync_fd(shard_fd_, path);
  fsync_dir(dir_);
  shard_ = number;
  shard_size_ = bytes.size();
}

int64_t DatasetWriter::append(const DatasetRecord& rec) {
  if (records_fd_ < 0) throw Error("dataset {}: the writer is closed", dir_);
  if (failed_)
    throw Error("dataset {}: an earlier write failed; reopen the dataset with resume", dir_);
  const std::string who =
      rec.id ? fmt::format("dataset {} record {} (id '{}', sample {})", dir_, count_, *rec.id,
                           rec.sample)
             : fmt::format("dataset {} record {}", dir_, count_);
  const int64_t V = header_.vocab_size;
  const int64_t n = int64_t(rec.tokens.size());
  if (n > int64_t(INT32_MAX)) throw Error("{}: {} tokens is too many", who, n);
  if (rec.prompt_tokens < 0 || rec.prompt_tokens > n)
    throw Error("{}: prompt_tokens {} is outside [0, {}] (the number of tokens)", who,
                rec.prompt_tokens, n);
  const int32_t first = rec.first_target < 0 ? rec.prompt_tokens : rec.first_target;
  if (first > n) throw Error("{}: first_target {} is past the {} tokens", who, first, n);
  for (int64_t i = 0; i < n; i++)
    if (rec.tokens[i] < 0 || rec.tokens[i] >= V)
      throw Error("{}: token {} is {}, outside the vocabulary ({})", who, i, rec.tokens[i], V);
  const int64_t rows = n - first;
  if (rec.rows.rows() != rows)
    throw Error("{}: {} teacher rows for {} target tokens ({} tokens, first target {})", who,
                rec.rows.rows(), rows, n, first);
  if (rows > 0 && rec.rows.k != header_.k)
    throw Error("{}: teacher rows have k = {}, the dataset's k is {}", who, rec.rows.k,
                header_.k);
  try {
    if (rows > 0) topk_rows_check(rec.rows, V);
  } catch (const Error& e) {
    throw Error("{}: teacher {}", who, e.what());
  }
  if (rec.id && keys_.count({*rec.id, rec.sample}))
    throw Error("{}: this (id, sample) is already in the dataset", who);
  if (!rec.extra.is_object()) throw Error("{}: extra fields must be a JSON object", who);
  for (const char* key : kReservedFields)
    if (rec.extra.contains(key)) throw Error("{}: extra field '{}' is reserved", who, key);

  // Shard bytes: record header, then the payload.
  TopkRows sorted = rec.rows;
  sorted.k = header_.k;
  if (rows == 0) sorted.resize(0, header_.k);
  topk_rows_sort(sorted);
  std::vector<uint8_t> buf(kRecordHeaderBytes);
  buf.reserve(kRecordHeaderBytes + kPayloadFixedBytes + size_t(n) * 4 + size_t(rows) * 64);
  put<uint64_t>(buf, uint64_t(count_));
  put<uint32_t>(buf, uint32_t(n));
  put<uint32_t>(buf, uint32_t(rec.prompt_tokens));
  put<uint32_t>(buf, uint32_t(first));
  if (token_id_bytes(V) == 2) {
    for (int32_t t : rec.tokens) put<uint16_t>(buf, uint16_t(t));
  } else {
    for (int32_t t : rec.tokens) put<uint32_t>(buf, uint32_t(t));
  }
  encode_topk_rows(header_.encoding, sorted, V, buf);
  const uint64_t payload = buf.size() - kRecordHeaderBytes;
  if (payload > UINT32_MAX) throw Error("{}: {} bytes is too large for one record", who, payload);
  const uint32_t magic = kRecordMagic, len = uint32_t(payload),
                 crc = crc32(buf.data() + kRecordHeaderBytes, payload);
  std::memcpy(buf.data(), &magic, 4);
  std::memcpy(buf.data() + 4, &len, 4);
  std::memcpy(buf.data() + 8, &crc, 4);

  // A full shard is closed before this record (a lone oversized record still gets a shard).
  if (shard_ < 0 || (shard_size_ > shard_header_size_ &&
                     shard_size_ + buf.size() > options_.shard_bytes)) {
    try {
      start_shard(shard_ + 1);
    } catch (...) {
      failed_ = true;
      throw;
    }
  }

  nlohmann::ordered_json line;
  line["index"] = count_;
  if (rec.id) line["id"] = *rec.id;
  line["sample"] = rec.sample;
  line["source"] = rec.source;
  line["teacher"] = !rec.teacher.empty() ? rec.teacher
                    : !run_teacher_.empty() ? run_teacher_
                                            : header_.teacher;
  line["prompt"] = rec.prompt;
  line["completion"] = rec.completion;
  line["num_tokens"] = n;
  line["prompt_tokens"] = rec.prompt_tokens;
  line["first_target"] = first;
  line["shard"] = shard_;
  line["offset"] = shard_size_;
  line["bytes"] = buf.size();
  for (const auto& [key, value] : rec.extra.items())
    line[key] = nlohmann::ordered_json::parse(
        value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  // Model text may end inside a UTF-8 character (a completion cut at a token limit): such bytes
  // become U+FFFD here; the token ids in the shard stay exact.
  const std::string text =
      line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";

  const std::string shard_path = dir_ + "/" + shard_file_name(shard_);
  try {
    pwrite_all(shard_fd_, buf.data(), buf.size(), shard_size_, shard_path);
    fsync_fd(shard_fd_, shard_path);
    const std::string records_path = dir_ + "/records.jsonl";
    write_all(records_fd_, text.data(), text.size(), records_path);
    fsync_fd(records_fd_, records_path);
  } catch (...) {
    failed_ = true;
    throw;
  }
  shard_size_ += buf.size();
  if (rec.id) keys_.emplace(*rec.id, rec.sample);
  return count_++;
}

}  // namespace distill
