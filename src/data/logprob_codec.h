// Storage encodings of the teacher's sparse distributions: per scored position, the top-k token
// ids, their log-probabilities (natural log, T = 1) and the probability mass outside them.
//
//   exact    per row: u16 count, u32 ids, f32 log-probabilities, f32 tail. Bit-exact;
//            8k + 6 bytes per token.
//   compact  (default) one bit stream for all rows of a record; per row:
//     - 1 bit "k entries", else the count; the tail as 12 bits of asin(sqrt(tail)) on [0, pi/2];
//     - the ids as a sorted set: binary interpolative coding (Moffat & Stuiver) or Rice /
//       exp-Golomb gaps, whichever is shorter for the row (1 bit says which);
//     - each probability as a code on a grid uniform in sqrt(p) (step 1/480) above
//       p0 = (4/480)^2 and uniform in log p below it (0.5-nat steps, the sqrt grid's step at p0,
//       down to e^-40), minus the row's smallest code, Rice / exp-Golomb coded in id order with
//       the row's best parameter;
//     - on decoding, the probabilities are rescaled so that entries + tail sum to 1.
//   Why sqrt(p): between nearby distributions KL ~ 2 * sum_i (sqrt(p'_i) - sqrt(p_i))^2, so a grid
//   uniform in sqrt(p) spends bits where KL is sensitive (fine log-steps for likely tokens,
//   coarse ones for unlikely ones: an unlikely token's error hardly moves KL) and bounds the
//   error: per token at most 1/(2 * 480^2) of KL in either region, so a row's KL over its k + 1
//   categories (entries + tail bucket) is at most about k / 460800 + 1e-7 and about
//   k / 1382400 on average (3.6e-5 at k = 50), whatever the distribution. (A row whose entries
//   hold less than ~1e-7 of the mass is the exception: they keep at least that much.)
//   Why sorted ids: the order by probability costs log2(k!) bits per row that the loss does not
//   need; ids are most of the bytes (a uniformly random top-50 set of 32000 ids is
//   log2 C(32000, 50) = 67 bytes at best) and a teacher's top k clusters in the frequent low ids
//   of a BPE vocabulary, which interpolative coding exploits without a model.
//   Decoded rows are in canonical order (descending probability, ties by ascending id).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace distill {

enum class LogprobEncoding : uint32_t { Exact = 1, Compact = 2 };

const char* logprob_encoding_name(LogprobEncoding encoding);
// "exact" or "compact"; anything else is an error listing the choices.
LogprobEncoding logprob_encoding_from_name(std::string_view name);
// The id stored in files; an unknown id is an error naming it.
LogprobEncoding logprob_encoding_from_id(uint32_t id);

// The teacher's top-k distributions of `rows()` consecutive positions.
struct TopkRows {
  int k = 0;
  std::vector<int32_t> ids;       // (rows, k) token ids; a row of fewer than k entries ends in -1s
  std::vector<float> logprobs;    // (rows, k) log-probabilities at T = 1; -inf where the id is -1
  std::vector<float> tail;        // (rows) probability mass outside the row's entries, in [0, 1]

  int rows() const { return static_cast<int>(tail.size()); }
  // Entries of `row` before the first -1 id.
  int count(int row) const;
  // `rows` rows of k entries, all empty (ids -1, log-probabilities -inf, tail 1).
  void resize(int rows, int k);
  // Appends a row of `n` <= k entries; tail < 0 means "derive it": max(0, 1 - sum exp(logprobs)).
  void append(const int32_t* row_ids, const float* row_logprobs, int n, float tail_mass = -1.0f);
};

// The row's tail when the teacher did not give one: max(0, 1 - sum of exp(logprobs)).
float derived_tail(const float* logprobs, int n);

// Checks what the encodings need, throwing distill::Error("row R: ...") on the first problem:
// 0 < k <= 65535, array sizes, ids in [0, vocab_size) and distinct within a row, -1 only as
// trailing padding, finite log-probabilities <= 1e-3 (a teacher's rounding may exceed 0 a
// little), tails finite in [0, 1 + 1e-3].
void topk_rows_check(const TopkRows& rows, int64_t vocab_size);
// Puts every row in canonical order: descending log-probability, ties by ascending id.
void topk_rows_sort(TopkRows& rows);

// Appends the encoding of `rows` (checked and in canonical order) to `out`.
void encode_topk_rows(LogprobEncoding encoding, const TopkRows& rows, int64_t vocab_size,
                      std::vector<uint8_t>& out);
// Decodes `num_rows` rows of k entries from data[0, size) into `out` (resized) and returns the
// bytes used. Malformed input throws distill::Error saying what is wrong (the caller adds the
// file and record); it never reads outside [data, data + size).
size_t decode_topk_rows(LogprobEncoding encoding, const uint8_t* data, size_t size,
                        int num_rows, int k, int64_t vocab_size, TopkRows& out);

// What an encoding costs and the error it introduces on given rows.
struct CodecMeasurement {
  int64_t rows = 0;
  double bytes_per_row = 0.0;  // encoded bytes / rows (a row is one scored token)
  // KL(p_decoded || p_original) in nats over the k + 1 categories (the row's entries + the tail
  // bucket), both normalized; mean and max over rows.
  double kl_mean = 0.0, kl_max = 0.0;
  double max_abs_logprob_error = 0.0;  // max |decoded - original| log-probability over entries
};

// Encodes and decodes `rows` (checked; sorted copy) and compares.
CodecMeasurement measure_logprob_codec(LogprobEncoding encoding, const TopkRows& rows,
                                       int64_t vocab_size);

// KL(a || b) over the k + 1 categories of two rows of the same token set (matched by id; the tail
// is the last category), each normalized; 0 * log(0 / x) = 0.
double topk_bucket_kl(const int32_t* a_ids, const float* a_logprobs, float a_tail,
                      const int32_t* b_ids, const float* b_logprobs, float b_tail, int n);

}  // namespace distill
