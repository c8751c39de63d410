// The teacher-data dataset: a directory written by `distill generate` / `harvest` and read by
// `distill train`.
//
//   dataset.json       header, written once (atomically): format version, tokenizer fingerprint,
//                      vocabulary size, k, encoding, teacher, sampling parameters, created time.
//   records.jsonl      one JSON object per sequence, line i = record i: index, id (the caller's
//                      prompt id, absent if none), sample, source, teacher, prompt, completion,
//                      num_tokens, prompt_tokens, first_target, shard, offset, bytes, and the
//                      caller's extra fields.
//   shard-00000.bin …  binary shards (little-endian), each:
//       header   "DSTLSHRD", u32 format version, u32 header size, u32 shard number,
//                u32 vocab size, u32 k, u32 encoding id, u32 token id bytes (2 if vocab <= 65536,
//                else 4), u32 fingerprint length F, F fingerprint bytes (the hex decoded),
//                u32 CRC-32 of everything before it
//       records  back to back: u32 magic "DREC", u32 payload length P, u32 CRC-32 of the payload,
//                then the payload: u64 record index, u32 num_tokens n, u32 prompt_tokens,
//                u32 first_target f, n token ids, then the teacher rows of targets f .. n-1
//                in the dataset's encoding (data/logprob_codec.h).
//   Row j of a record is the teacher's distribution for token first_target + j given the tokens
//   before it. first_target is prompt_tokens when only the completion is scored; 1 when the
//   whole text is (teacher-forced scoring).
//
// Durability: append() writes the record's shard bytes and fsyncs the shard, then appends its
// records.jsonl line and fsyncs that, so a line only ever names durable bytes. A writer killed
// at any moment loses at most the record in flight: resuming drops a partial last line, cuts
// the shard bytes past the last listed record and removes shards no line names. A line counts
// only once it ends in '\n' (readers skip a final partial line too, so a dataset can be read
// while it is written).
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mmap.h"
#include "data/logprob_codec.h"

namespace distill {

inline constexpr int kDatasetFormatVersion = 1;
inline constexpr uint64_t kDefaultShardBytes = uint64_t(256) << 20;

struct DatasetHeader {
  int format_version = kDatasetFormatVersion;
  std::string tokenizer_fingerprint;  // hex (even length, non-empty), the caller's tokenizer hash
  int64_t vocab_size = 0;             // the tokenizer's, in [1, 2^31)
  int k = 0;                          // top-k entries per scored position, in [1, 65535]
  LogprobEncoding encoding = LogprobEncoding::Compact;
  std::string teacher;                // e.g. a model name or API endpoint + model
  nlohmann::json sampling = nlohmann::json::object();  // free-form: temperature, top_p, ...
  std::string created;                // UTC, ISO 8601; set by DatasetWriter when it creates

  nlohmann::json to_json() const;
  // Errors name `where` (the dataset.json path) and the bad field.
  static DatasetHeader from_json(const nlohmann::json& j, const std::string& where);
};

// One sequence as the generator hands it to the writer.
struct DatasetRecord {
  std::optional<std::string> id;  // the prompt's id in the caller's prompt file
  int64_t sample = 0;             // n-th sample of that prompt
  std::string prompt, completion, source, teacher;
  std::vector<int32_t> tokens;    // (num_tokens) prompt then completion ids
  int32_t prompt_tokens = 0;
  int32_t first_target = -1;      // first token with a teacher row; -1 means prompt_tokens
  TopkRows rows;                  // (num_tokens - first_target) rows of the dataset's k
  nlohmann::json extra = nlohmann::json::object();  // more fields for the records.jsonl line
};

// A record as read back.
struct DatasetEntry {
  int64_t index = -1;
  std::vector<int32_t> tokens;  // (num_tokens)
  int32_t prompt_tokens = 0;
  int32_t first_target = 0;
  TopkRows rows;  // row j: teacher distribution of tokens[first_target + j]; canonical order
                  // (descending probability, ties by ascending id)
};

struct DatasetWriterOptions {
  uint64_t shard_bytes = kDefaultShardBytes;  // a shard is closed before it would exceed this
                                              // (a record larger than it gets a shard alone)
};

// What resuming found and discarded (the CLI reports it).
struct DatasetResume {
  int64_t records = 0;            // records kept
  bool dropped_partial_line = false;
  uint64_t dropped_shard_bytes = 0;  // bytes cut past the last listed record
  int removed_shards = 0;         // shard files no line named
};

class DatasetWriter {
 public:
  // Creates the dataset at `dir` (the directory may exist but must hold no dataset files), or,
  // when `resume` and dir/dataset.json exists, resumes it: the header must agree on tokenizer
  // fingerprint, vocabulary size, k and encoding ("dataset D was written with tokenizer
  // fingerprint A, this run uses B"). An existing dataset without `resume` is an error. Holds
  // an exclusive lock on records.jsonl: a second writer of the same dataset is an error.
  // Records with no teacher of their own get `header.teacher` (this run's, which may differ
  // from the dataset's first run).
  static DatasetWriter open(const std::string& dir, const DatasetHeader& header, bool resume,
                            const DatasetWriterOptions& options = {});

  DatasetWriter(DatasetWriter&& other) noexcept;
  DatasetWriter& operator=(DatasetWriter&& other) noexcept;
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;
  ~DatasetWriter();

  // Validates and appends a record durably; returns its index. Errors name the record's id and
  // what is wrong (a token outside the vocabulary, a row count that does not match the tokens,
  // an (id, sample) already written, ...). Rows are stored in canonical order. After an I/O
  // error the writer refuses further appends (reopen with resume).
  int64_t append(const DatasetRecord& record);

  int64_t size() const { return count_; }
  const DatasetHeader& header() const { return header_; }
  const DatasetResume& resumed() const { return resume_; }
  // (id, sample) of every record written so far, resumed ones included; records without an id
  // are not keyed. The generator skips these.
  const std::set<std::pair<std::string, int64_t>>& completed_keys() const { return keys_; }
  bool completed(const std::string& id, int64_t sample) const;

  // Closes the files (the destructor does too); further appends are errors.
  void close();

 private:
  DatasetWriter() = default;
  void start_shard(int number);

  std::string dir_;
  DatasetHeader header_;
  DatasetWriterOptions options_;
  std::string run_teacher_;     // this run's teacher: the default of a record's "teacher"
  DatasetResume resume_;
  int records_fd_ = -1, shard_fd_ = -1;
  int shard_ = -1;              // number of the open shard, -1 before the first record
  uint64_t shard_size_ = 0;
  uint64_t shard_header_size_ = 0;
  int64_t count_ = 0;
  bool failed_ = false;
  std::set<std::pair<std::string, int64_t>> keys_;
};

// One records.jsonl line, as far as the binary side needs it.
struct RecordLine {
  int shard = 0;
  uint64_t offset = 0, bytes = 0;      // the record's bytes in the shard (header included)
  uint64_t line_begin = 0, line_size = 0;  // the line in records.jsonl, without its '\n'
  int64_t num_tokens = 0;
  std::optional<std::string> id;
  int64_t sample = 0;
};

// Parses the complete ('\n'-terminated) lines of records.jsonl text[0, size) and returns them;
// *complete_bytes is where the complete lines end. Checks that each line is a JSON object with
// the fields above, that line i has index i and that records lie back to back: the first of
// shard s at offset shard_header_size, each next one where the previous ends, shards in order.
// Errors: "<path> line L: ...".
std::vector<RecordLine> scan_records_jsonl(const char* text, size_t size, const std::string& path,
                                           uint64_t shard_header_size, size_t* complete_bytes);

class DatasetReader {
 public:
  // Validates dataset.json, every complete records.jsonl line and the header of every shard a
  // line names, and that each record lies inside its shard. Errors name the file and the line,
  // record and offset: "records.jsonl line 17: ...", "shard-00000.bin: record 12 at offset
  // 123456 is truncated: expected N bytes, found M", a bad magic or checksum, a shard whose
  // tokenizer fingerprint differs from dataset.json's.
  static DatasetReader open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const DatasetHeader& header() const { return header_; }
  int64_t size() const { return int64_t(records_.size()); }
  int num_shards() const { return int(shards_.size()); }
  uint64_t shard_bytes() const;  // sum of the shard files' sizes

  // Record i: checks its CRC and decodes it (thread-safe; `out` is reused).
  void read(int64_t i, DatasetEntry& out) const;
  DatasetEntry read(int64_t i) const;
  // Its records.jsonl line.
  nlohmann::json record_json(int64_t i) const;
  // Reads every record (checksums and decoding): the first problem is an error.
  void verify() const;

  // For the trainer: the student's tokenizer must be the dataset's. "dataset D uses tokenizer
  // fingerprint A but the student's tokenizer is B" (and likewise for the vocabulary size).
  void check_compatible(const std::string& tokenizer_fingerprint, int64_t vocab_size) const;

 private:
  std::string dir_;
  DatasetHeader header_;
  MappedFile records_file_;
  std::vector<MappedFile> shards_;
  std::vector<RecordLine> records_;
};


// ---- the shard format, shared by the writer and the reader ----------------------------------
inline constexpr char kShardMagic[8] = {'D', 'S', 'T', 'L', 'S', 'H', 'R', 'D'};
inline constexpr uint32_t kRecordMagic = 0x43455244;  // "DREC"
inline constexpr size_t kRecordHeaderBytes = 12;      // magic, payload length, payload CRC-32
// The payload starts with index, num_tokens, prompt_tokens, first_target.
inline constexpr size_t kPayloadFixedBytes = 20;

// CRC-32 (IEEE 802.3, the zlib/PNG one) of data[0, size), continuing from `crc`.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);
inline uint32_t crc32(const void* data, size_t size) { return crc32_update(0, data, size); }

std::string shard_file_name(int number);  // "shard-00042.bin"
// The shard header bytes for `header`'s dataset.
std::vector<uint8_t> shard_header_bytes(const DatasetHeader& header, int number);
// Checks a shard's header against dataset.json's and returns its size. Errors start with `name`
// (the shard's path): bad magic, unsupported version, checksum, a different fingerprint,
// vocabulary, k, encoding or shard number.
size_t shard_header_check(const uint8_t* data, size_t size, const std::string& name,
                          const DatasetHeader& header, int number);
// Hex string -> bytes; an empty, odd-length or non-hex string is an error naming it.
std::vector<uint8_t> fingerprint_bytes(const std::string& hex);

}  // namespace distill
