// The teacher-data dataset (data/dataset.h) and its logprob encodings (data/logprob_codec.h):
// round trips (exact bit-exact, compact within its KL bound), shard rotation, resume after
// kill -9 at random moments and after a cut at every byte of the last record, errors that name
// the file and line/record/offset, tokenizer mismatches, and the compact encoding's bytes/token
// and KL error on synthetic teacher distributions over V = 32000 (printed).
#include <gtest/gtest.h>

#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "data/dataset.h"
#include "data/logprob_codec.h"

namespace distill {
namespace {

namespace fs = std::filesystem;

// ---- helpers -------------------------------------------------------------------------------

// On a real disk every append costs two fsyncs; tests that append thousands of times use
// /dev/shm when there is one (a process killed by SIGKILL loses nothing the kernel has, so the
// crash tests mean the same there; the kill -9 test itself runs on disk).
class TempDir {
 public:
  explicit TempDir(const std::string& name, bool on_disk = false) {
    fs::path base = fs::temp_directory_path();
    std::error_code ec;
    if (!on_disk && fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0)
      base = "/dev/shm";
    path_ = (base / ("distill_dataset_test_" + std::to_string(::getpid()) + "_" + name)).string();
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using test_support::error_of;

std::string slurp(const std::string& path) { return read_file_text(path); }
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

DatasetHeader test_header(int k, LogprobEncoding enc, int64_t vocab = 32000) {
  DatasetHeader h;
  h.tokenizer_fingerprint = "00c0ffee12345678";
  h.vocab_size = vocab;
  h.k = k;
  h.encoding = enc;
  h.teacher = "test-teacher";
  h.sampling = {{"temperature", 1.0}, {"top_p", 0.95}};
  return h;
}

// A random top-k row: distinct ids, log-probabilities from a random softmax-like profile.
void random_rows(std::mt19937_64& rng, int rows, int k, int64_t V, TopkRows& out,
                 bool short_rows) {
  std::uniform_real_distribution<double> U;
  out.k = k;
  out.ids.clear();
  out.logprobs.clear();
  out.tail.clear();
  std::vector<int32_t> ids;
  std::vector<float> lps;
  for (int r = 0; r < rows; r++) {
    const int n = short_rows && U(rng) < 0.2 ? int(U(rng) * k) : k;
    ids.clear();
    while (int(ids.size()) < n) {
      const int32_t id = int32_t(U(rng) * double(V));
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    // Unnormalized logits, then log-probabilities with a tail of 0..50% of the mass.
    std::vector<double> z(n);
    const double scale = 0.5 + 6.0 * U(rng);
    for (double& v : z) v = scale * std::log(U(rng) + 1e-12);
    double sum = 0.0;
    for (double v : z) sum += std::exp(v);
    const double tail = n == 0 ? 1.0 : 0.5 * U(rng) * U(rng);
    lps.resize(n);
    for (int i = 0; i < n; i++) lps[i] = float(z[i] - std::log(sum) + std::log1p(-tail));
    out.append(ids.data(), lps.data(), n, float(tail));
  }
  topk_rows_sort(out);
}

// Record i of the synthetic datasets: everything derives from i, so a test can re-create it.
DatasetRecord make_record(int64_t i, int k, int64_t V, bool whole_text = false) {
  std::mt19937_64 rng(0x5eed + uint64_t(i) * 7919);
  std::uniform_int_distribution<int> len(1, 40);
  DatasetRecord r;
  r.id = "prompt-" + std::to_string(i / 3);
  r.sample = i % 3;
  if (i % 17 == 5) r.id.reset();  // some records come without a prompt id
  r.source = "synthetic";
  const int np = len(rng), nc = len(rng) - 1;
  r.prompt = "prompt text " + std::to_string(i) + " \"quoted\" \xc3\xa9";
  r.completion = "completion " + std::to_string(i) + (i % 5 == 0 ? "\xe2\x82" : "");  // cut UTF-8
  for (int t = 0; t < np + nc; t++) r.tokens.push_back(int32_t(rng() % uint64_t(V)));
  r.prompt_tokens = np;
  r.first_target = whole_text ? 1 : -1;
  const int first = whole_text ? 1 : np;
  random_rows(rng, np + nc - first, k, V, r.rows, true);
  r.extra = {{"turn", i % 4}, {"tags", {"a", "b"}}};
  return r;
}

// What reading a record written with `enc` must give: its rows through the codec.
TopkRows expected_rows(const TopkRows& rows, LogprobEncoding enc, int64_t V) {
  TopkRows sorted = rows;
  topk_rows_sort(sorted);
  std::vector<uint8_t> bytes;
  encode_topk_rows(enc, sorted, V, bytes);
  TopkRows out;
  decode_topk_rows(enc, bytes.data(), bytes.size(), sorted.rows(), sorted.k, V, out);
  return out;
}

bool same_bits(const TopkRows& a, const TopkRows& b) {
  return a.k == b.k && a.ids == b.ids && a.rows() == b.rows() &&
         std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * 4) == 0 &&
         std::memcmp(a.tail.data(), b.tail.data(), a.tail.size() * 4) == 0;
}

// Record i of the dataset is make_record(i): tokens, rows (bit for bit through the codec) and
// the records.jsonl fields.
void expect_record(const DatasetReader& rd, int64_t i, int k, bool whole_text = false) {
  const int64_t V = rd.header().vocab_size;
  const DatasetRecord want = make_record(i, k, V, whole_text);
  const DatasetEntry got = rd.read(i);
  ASSERT_EQ(got.index, i);
  ASSERT_EQ(got.tokens, want.tokens) << "record " << i;
  ASSERT_EQ(got.prompt_tokens, want.prompt_tokens);
  ASSERT_EQ(got.first_target, whole_text ? 1 : want.prompt_tokens);
  ASSERT_TRUE(same_bits(got.rows, expected_rows(want.rows, rd.header().encoding, V)))
      << "record " << i;
  const nlohmann::json j = rd.record_json(i);
  ASSERT_EQ(j["index"], i);
  ASSERT_EQ(j.contains("id"), want.id.has_value());
  if (want.id) {
    ASSERT_EQ(j["id"], *want.id);
  }
  ASSERT_EQ(j["sample"], want.sample);
  ASSERT_EQ(j["prompt"], want.prompt);
  // A completion cut inside a UTF-8 character is stored with U+FFFD (the tokens stay exact).
  const std::string completion = j["completion"];
  ASSERT_EQ(completion, i % 5 == 0 ? want.completion.substr(0, want.completion.size() - 2) +
                                         "\xef\xbf\xbd"
                                   : want.completion);
  ASSERT_EQ(j["num_tokens"], want.tokens.size());
  ASSERT_EQ(j["turn"], i % 4);
  ASSERT_EQ(j["teacher"], "test-teacher");
}

// ---- the codec -----------------------------------------------------------------------------

TEST(LogprobCodec, ExactIsBitExactIncludingShortRows) {
  std::mt19937_64 rng(1);
  for (int k : {1, 5, 20, 64}) {
    TopkRows rows;
    random_rows(rng, 300, k, 32000, rows, true);
    topk_rows_check(rows, 32000);
    std::vector<uint8_t> bytes;
    encode_topk_rows(LogprobEncoding::Exact, rows, 32000, bytes);
    TopkRows back;
    EXPECT_EQ(decode_topk_rows(LogprobEncoding::Exact, bytes.data(), bytes.size(), rows.rows(), k,
                               32000, back),
              bytes.size());
    EXPECT_TRUE(same_bits(rows, back)) << "k=" << k;
    const CodecMeasurement m = measure_logprob_codec(LogprobEncoding::Exact, rows, 32000);
    EXPECT_EQ(m.kl_max, 0.0);
    EXPECT_EQ(m.max_abs_logprob_error, 0.0);
  }
}

TEST(LogprobCodec, CompactKeepsIdsExactAndKlWithinItsBound) {
  std::mt19937_64 rng(2);
  for (int64_t V : {int64_t(50), int64_t(32000), int64_t(200000)}) {
    for (int k : {1, 8, 50}) {
      if (k > V) continue;
      TopkRows rows;
      random_rows(rng, 400, k, V, rows, true);
      std::vector<uint8_t> bytes;
      encode_topk_rows(LogprobEncoding::Compact, rows, V, bytes);
      TopkRows back;
      ASSERT_EQ(decode_topk_rows(LogprobEncoding::Compact, bytes.data(), bytes.size(),
                                 rows.rows(), k, V, back),
                bytes.size());
      for (int r = 0; r < rows.rows(); r++) {
        const int n = rows.count(r);
        ASSERT_EQ(back.count(r), n);
        const size_t at = size_t(r) * k;
        std::vector<int32_t> a(rows.ids.begin() + at, rows.ids.begin() + at + n);
        std::vector<int32_t> b(back.ids.begin() + at, back.ids.begin() + at + n);
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        ASSERT_EQ(a, b) << "row " << r;
        // Canonical order, and entries + tail sum to 1.
        double sum = back.tail[r];
        for (int i = 0; i < n; i++) {
          sum += std::exp(double(back.logprobs[at + i]));
          if (i > 0) {
          ASSERT_GE(back.logprobs[at + i - 1], back.logprobs[at + i]);
        }
        }
        ASSERT_NEAR(sum, 1.0, 1e-5);
        const double kl = topk_bucket_kl(back.ids.data() + at, back.logprobs.data() + at,
                                         back.tail[r], rows.ids.data() + at,
                                         rows.logprobs.data() + at, rows.tail[r], n);
        // The stated bound: k / (2 * 480^2) + 1e-7 (header comment of logprob_codec.h).
        ASSERT_LE(kl, n / (2.0 * 480 * 480) + 1e-7) << "V=" << V << " k=" << k << " row " << r;
      }
    }
  }
}

TEST(LogprobCodec, CorruptStreamsAreErrorsNotCrashes) {
  std::mt19937_64 rng(3);
  TopkRows rows;
  random_rows(rng, 40, 20, 32000, rows, true);
  for (LogprobEncoding enc : {LogprobEncoding::Compact, LogprobEncoding::Exact}) {
    std::vector<uint8_t> bytes;
    encode_topk_rows(enc, rows, 32000, bytes);
    int errors = 0;
    for (int trial = 0; trial < 3000; trial++) {
      std::vector<uint8_t> bad = bytes;
      if (trial % 3 == 0) {
        bad.resize(rng() % bad.size());  // truncated
      } else {
        for (int f = 0; f < 1 + trial % 4; f++) bad[rng() % bad.size()] ^= uint8_t(1 + rng() % 255);
      }
      TopkRows out;
      try {
        decode_topk_rows(enc, bad.data(), bad.size(), rows.rows(), 20, 32000, out);
        for (int32_t id : out.ids) ASSERT_LT(id, 32000);
      } catch (const Error&) {
        errors++;
      }
    }
    EXPECT_GT(errors, 1000) << logprob_encoding_name(enc);  // every truncation at least
  }
}

TEST(LogprobCodec, RejectsRowsItCannotStore) {
  TopkRows rows;
  rows.k = 3;
  const int32_t ids[] = {5, 7, 5};
  const float lps[] = {-0.1f, -2.0f, -3.0f};
  rows.append(ids, lps, 3);
  EXPECT_EQ(error_of([&] { topk_rows_check(rows, 100); }), "row 0: token id 5 appears twice");
  rows.ids[2] = 100;
  EXPECT_EQ(error_of([&] { topk_rows_check(rows, 100); }),
            "row 0: token id 100 is outside the vocabulary (100)");
  rows.ids[2] = 9;
  rows.logprobs[1] = 0.5f;
  EXPECT_EQ(error_of([&] { topk_rows_check(rows, 100); }),
            "row 0: token 7 has log-probability 0.5 (expected finite and <= 0)");
  rows.logprobs[1] = NAN;
  EXPECT_NE(error_of([&] { topk_rows_check(rows, 100); }).find("log-probability nan"),
            std::string::npos);
  rows.logprobs[1] = -2.0f;
  rows.ids[1] = -1;
  EXPECT_EQ(error_of([&] { topk_rows_check(rows, 100); }),
            "row 0: entry 2 has token id 9 (expected an id in [0, 100), or -1 as padding at the "
            "end of the row)");
  EXPECT_EQ(error_of([] { logprob_encoding_from_name("fp8"); }),
            "unknown logprob encoding 'fp8' (expected exact or compact)");
}

// Synthetic teacher distributions over V = 32000: full softmax, then the top 50.
//   gaussian: logits sigma * N(0, 1), sigma ~ U[2, 8] (ids carry no structure: random)
//   lm-like:  a Zipf unigram prior over ids (-a log(id + 1), a ~ U[0.6, 1.4]: low ids are the
//             frequent tokens, as in a BPE vocabulary) + context noise s * N(0, 1), s ~ U[0.3, 1.2]
//             + a few boosted "plausible continuations" (up to +25 nats)
//   lm-like, random ids: the same with the prior over a random permutation of the ids
struct Family {
  const char* name;
  int kind;
};

TopkRows synthetic_teacher(int kind, int rows, int k, uint64_t seed, double* p1, double* entropy) {
  const int V = 32000;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N01;
  std::uniform_real_distribution<double> U;
  TopkRows t;
  t.k = k;
  std::vector<double> z(V);
  std::vector<int32_t> perm(V), idx(V);
  std::iota(perm.begin(), perm.end(), 0);
  *p1 = *entropy = 0.0;
  for (int r = 0; r < rows; r++) {
    if (kind == 0) {
      const double s = 2.0 + 6.0 * U(rng);
      for (double& v : z) v = s * N01(rng);
    } else {
      if (kind == 2) std::shuffle(perm.begin(), perm.end(), rng);
      const double a = 0.6 + 0.8 * U(rng), s = 0.3 + 0.9 * U(rng);
      for (int j = 0; j < V; j++) z[j] = -a * std::log(perm[j] + 1.0) + s * N01(rng);
      const int boosted = 1 + int(30 * U(rng) * U(rng));
      const double top = 25.0 * (0.3 + 0.7 * U(rng));
      for (int b = 0; b < boosted; b++) z[size_t(U(rng) * V)] += top * (b == 0 ? 1.0 : U(rng));
    }
    const double mx = *std::max_element(z.begin(), z.end());
    double sum = 0.0;
    for (double v : z) sum += std::exp(v - mx);
    const double lz = mx + std::log(sum);
    for (double v : z) *entropy -= std::exp(v - lz) * (v - lz) / rows;
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return z[a] > z[b]; });
    std::vector<float> lp(k);
    for (int i = 0; i < k; i++) lp[i] = float(z[idx[i]] - lz);
    *p1 += std::exp(double(lp[0])) / rows;
    t.append(idx.data(), lp.data(), k);  // tail derived: 1 - sum of the top k
  }
  return t;
}

// DistillKit's "budget" setting, re-implemented from its description as the reference point:
// ids at ceil(log2 V) bits, the top-1 log-probability in bf16, the other k - 1 approximated by a
// least-squares fit in the rank i of {1, i, sqrt(i)} with f32 coefficients; tail derived.
double distillkit_budget_kl(const TopkRows& rows, double* bytes_per_row) {
  const int k = rows.k;
  double kl_sum = 0.0;
  for (int r = 0; r < rows.rows(); r++) {
    const float* lp = rows.logprobs.data() + size_t(r) * k;
    double A[3][4] = {};
    for (int i = 1; i < k; i++) {
      const double f[3] = {1.0, double(i), std::sqrt(double(i))};
      for (int a = 0; a < 3; a++) {
        for (int c = 0; c < 3; c++) A[a][c] += f[a] * f[c];
        A[a][3] += f[a] * lp[i];
      }
    }
    for (int p = 0; p < 3; p++)  // Gauss-Jordan
      for (int q = 0; q < 3; q++)
        if (q != p) {
          const double f = A[q][p] / A[p][p];
          for (int c = 0; c < 4; c++) A[q][c] -= f * A[p][c];
        }
    std::vector<float> d(k);
    uint32_t u;
    std::memcpy(&u, &lp[0], 4);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;  // bf16, round to nearest even
    std::memcpy(&d[0], &u, 4);
    double sum = std::exp(double(d[0]));
    for (int i = 1; i < k; i++) {
      d[i] = float(A[0][3] / A[0][0] + A[1][3] / A[1][1] * i + A[2][3] / A[2][2] * std::sqrt(i));
      sum += std::exp(double(d[i]));
    }
    const int32_t* ids = rows.ids.data() + size_t(r) * k;
    kl_sum += topk_bucket_kl(ids, d.data(), float(std::max(0.0, 1.0 - sum)), ids, lp,
                             rows.tail[r], k);
  }
  *bytes_per_row = k * std::ceil(std::log2(32000.0)) / 8.0 + 2 + 12;
  return kl_sum / rows.rows();
}

TEST(LogprobCodec, BytesPerTokenAndKlErrorOnSyntheticTeachers) {
  const Family families[] = {{"gaussian logits, random ids", 0},
                             {"lm-like, BPE-ordered ids", 1},
                             {"lm-like, random ids", 2}};
  const int rows = 300;
  for (const Family& fam : families) {
    double p1, entropy;
    const TopkRows top50 = synthetic_teacher(fam.kind, rows, 50, 77 + fam.kind, &p1, &entropy);
    for (int k : {20, 50}) {
      TopkRows t;
      t.k = k;
      for (int r = 0; r < rows; r++)
        t.append(top50.ids.data() + size_t(r) * 50, top50.logprobs.data() + size_t(r) * 50, k);
      double tail = 0.0;
      for (float v : t.tail) tail += v / rows;
      const CodecMeasurement exact = measure_logprob_codec(LogprobEncoding::Exact, t, 32000);
      const CodecMeasurement compact = measure_logprob_codec(LogprobEncoding::Compact, t, 32000);
      double dk_bytes;
      const double dk_kl = distillkit_budget_kl(t, &dk_bytes);
      std::printf("[codec] %-28s k=%d (top-1 p %.2f, entropy %.2f nats, tail %.3f)\n", fam.name,
                  k, p1, entropy, tail);
      std::printf("[codec]   exact    %6.2f bytes/token  KL mean %.2e max %.2e\n",
                  exact.bytes_per_row, exact.kl_mean, exact.kl_max);
      std::printf("[codec]   compact  %6.2f bytes/token  KL mean %.2e max %.2e  max |dlogp| %.3f\n",
                  compact.bytes_per_row, compact.kl_mean, compact.kl_max,
                  compact.max_abs_logprob_error);
      std::printf("[codec]   (DistillKit budget scheme at this vocab: %.2f bytes/token, KL mean "
                  "%.2e)\n", dk_bytes, dk_kl);
      EXPECT_EQ(exact.kl_max, 0.0);
      EXPECT_EQ(exact.bytes_per_row, 2 + 8.0 * k + 4);
      EXPECT_LT(compact.kl_mean, 1e-4) << fam.name << " k=" << k;
      EXPECT_LT(compact.kl_max, 2e-4) << fam.name << " k=" << k;
      EXPECT_LT(compact.kl_mean * 100, dk_kl) << fam.name << " k=" << k;
      if (k == 50) {
        EXPECT_LT(compact.bytes_per_row, 114.0) << fam.name;
      }
      if (k == 50 && fam.kind == 1) {
        EXPECT_LE(compact.bytes_per_row, 80.0);
      }
      if (k == 20) {
        EXPECT_LT(compact.bytes_per_row, 52.0) << fam.name;
      }
    }
  }
}

// ---- the dataset ---------------------------------------------------------------------------

TEST(Dataset, RoundTripsManyRecordsWithBothEncodings) {
  for (LogprobEncoding enc : {LogprobEncoding::Exact, LogprobEncoding::Compact}) {
    for (bool whole_text : {false, true}) {
      TempDir dir(std::string("roundtrip_") + logprob_encoding_name(enc) +
                  (whole_text ? "_whole" : ""));
      const int k = 20, n = 150;
      int64_t scored = 0;
      {
        DatasetWriter w = DatasetWriter::open(dir.path(), test_header(k, enc), false);
        for (int i = 0; i < n; i++) {
          const DatasetRecord r = make_record(i, k, 32000, whole_text);
          scored += r.rows.rows();
          ASSERT_EQ(w.append(r), i);
        }
        EXPECT_EQ(w.size(), n);
      }
      const DatasetReader rd = DatasetReader::open(dir.path());
      ASSERT_EQ(rd.size(), n);
      EXPECT_EQ(rd.header().tokenizer_fingerprint, "00c0ffee12345678");
      EXPECT_EQ(rd.header().encoding, enc);
      EXPECT_EQ(rd.header().sampling["top_p"], 0.95);
      EXPECT_FALSE(rd.header().created.empty());
      for (int i = n - 1; i >= 0; i--) expect_record(rd, i, k, whole_text);  // random access
      rd.verify();
      std::printf("[dataset] %s%s: %lld records, %lld scored tokens, %.1f shard bytes/token\n",
                  logprob_encoding_name(enc), whole_text ? " (whole text scored)" : "",
                  (long long)n, (long long)scored, double(rd.shard_bytes()) / double(scored));
    }
  }
}

TEST(Dataset, RotatesShardsAtTheSizeLimit) {
  TempDir dir("rotate");
  const int k = 8, n = 60;
  DatasetWriterOptions opt;
  opt.shard_bytes = 2048;
  {
    DatasetWriter w =
        DatasetWriter::open(dir.path(), test_header(k, LogprobEncoding::Compact), false, opt);
    for (int i = 0; i < n; i++) w.append(make_record(i, k, 32000));
    // A record larger than the limit gets a shard of its own.
    DatasetRecord big = make_record(n, k, 32000);
    big.tokens.assign(3000, 7);
    big.prompt_tokens = 1000;
    std::mt19937_64 rng(9);
    random_rows(rng, 2000, k, 32000, big.rows, false);
    w.append(big);
    w.append(make_record(n + 1, k, 32000));
  }
  const DatasetReader rd = DatasetReader::open(dir.path());
  ASSERT_GT(rd.num_shards(), 5);
  std::vector<int> shard_of(rd.size());
  for (int64_t i = 0; i < rd.size(); i++) shard_of[i] = rd.record_json(i)["shard"];
  for (int s = 0; s < rd.num_shards(); s++) {
    const auto size = fs::file_size(dir.path() + "/" + shard_file_name(s));
    const bool alone = std::count(shard_of.begin(), shard_of.end(), s) == 1;
    if (!alone) {
      EXPECT_LE(size, opt.shard_bytes) << "shard " << s;
    }
  }
  EXPECT_NE(shard_of[n], shard_of[n - 1]);
  EXPECT_NE(shard_of[n + 1], shard_of[n]);
  EXPECT_EQ(rd.read(n).tokens.size(), 3000u);
  for (int i = 0; i < n; i++) expect_record(rd, i, k);
  expect_record(rd, n + 1, k);
}

// The generator's loop, as a child process: resume, skip what is done, append the rest.
[[noreturn]] void append_all(const std::string& dir, int n, int k, uint64_t shard_bytes) {
  try {
    DatasetWriterOptions opt;
    opt.shard_bytes = shard_bytes;
    DatasetWriter w =
        DatasetWriter::open(dir, test_header(k, LogprobEncoding::Compact), true, opt);
    for (int i = 0; i < n; i++) {
      DatasetRecord r = make_record(i, k, 32000);
      if (r.id && w.completed(*r.id, r.sample)) continue;
      if (!r.id && i < w.size()) continue;  // unkeyed records: by position
      w.append(r);
    }
    _exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    _exit(3);
  }
}

TEST(Dataset, ResumesAfterKill9AtRandomMoments) {
  TempDir dir("kill9", /*on_disk=*/true);
  const int k = 16, n = 250;
  const uint64_t shard_bytes = 16 << 10;  // rotations happen while being killed
  std::mt19937_64 rng(12345);
  int kills = 0, recoveries = 0;
  bool finished = false;
  for (int round = 0; round < 12 && !finished; round++) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) append_all(dir.path(), n, k, shard_bytes);
    ::usleep(useconds_t(2000 + rng() % 40000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "the child failed (see its stderr)";
      finished = true;
      break;
    }
    kills++;
    if (!fs::exists(dir.path() + "/dataset.json")) continue;  // killed before creating it
    // A reader sees a consistent prefix even before anyone resumes.
    const DatasetReader rd = DatasetReader::open(dir.path());
    for (int64_t i = 0; i < rd.size(); i++) expect_record(rd, i, k);
    // Resume here to see what the kill left behind.
    DatasetWriterOptions opt;
    opt.shard_bytes = shard_bytes;
    DatasetWriter w =
        DatasetWriter::open(dir.path(), test_header(k, LogprobEncoding::Compact), true, opt);
    const DatasetResume& res = w.resumed();
    EXPECT_EQ(res.records, rd.size());
    if (res.dropped_partial_line || res.dropped_shard_bytes > 0 || res.removed_shards > 0)
      recoveries++;
  }
  if (!finished) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) append_all(dir.path(), n, k, shard_bytes);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::printf("[dataset] kill -9: %d kills, %d left a partial record to clean up\n", kills,
              recoveries);
  EXPECT_GE(kills, 3);
  const DatasetReader rd = DatasetReader::open(dir.path());
  ASSERT_EQ(rd.size(), n);  // every record exactly once, in order
  for (int i = 0; i < n; i++) expect_record(rd, i, k);
  rd.verify();
}

// Every state a crash while appending the last record can leave: its shard bytes cut at every
// offset (no records.jsonl line yet), or its line cut at every byte. Resume must drop exactly
// that record, and appending it again gives the complete dataset.
TEST(Dataset, RecoversFromACutAtEveryByteOfTheLastRecord) {
  // (last record shares a shard, starts a new shard, is the first record of all)
  for (const auto& [own_shard, n] : {std::pair(false, 3), std::pair(true, 3), std::pair(true, 1)}) {
    TempDir dir("cut_" + std::to_string(own_shard) + "_" + std::to_string(n));
    const int k = 4;
    DatasetWriterOptions opt;
    opt.shard_bytes = own_shard ? 1 : kDefaultShardBytes;  // 1: every record gets a shard
    const DatasetHeader header = test_header(k, LogprobEncoding::Compact);
    {
      DatasetWriter w = DatasetWriter::open(dir.path(), header, false, opt);
      for (int i = 0; i < n; i++) w.append(make_record(i, k, 32000));
    }
    const std::string records_path = dir.path() + "/records.jsonl";
    const std::string full_records = slurp(records_path);
    const nlohmann::json last = DatasetReader::open(dir.path()).record_json(n - 1);
    const std::string last_shard = dir.path() + "/" + shard_file_name(last["shard"]);
    const std::string full_shard = slurp(last_shard);
    const size_t line_start =
        n == 1 ? 0 : full_records.rfind('\n', full_records.size() - 2) + 1;
    const uint64_t start = own_shard ? 0 : uint64_t(last["offset"]);
    const uint64_t end = uint64_t(last["offset"]) + uint64_t(last["bytes"]);
    ASSERT_EQ(end, full_shard.size());

    int states = 0;
    auto check_state = [&](const std::string& records, const std::string& shard) {
      spit(records_path, records);
      spit(last_shard, shard);
      {
        // Readers ignore the unfinished record.
        const DatasetReader rd = DatasetReader::open(dir.path());
        ASSERT_EQ(rd.size(), n - 1);
      }
      DatasetWriter w = DatasetWriter::open(dir.path(), header, true, opt);
      ASSERT_EQ(w.size(), n - 1);
      // Resuming leaves exactly the listed records: the partial line and bytes are gone.
      ASSERT_EQ(slurp(records_path), full_records.substr(0, line_start));
      if (own_shard) {
        ASSERT_FALSE(fs::exists(last_shard));
      } else {
        ASSERT_EQ(fs::file_size(last_shard), start);
      }
      const DatasetRecord r = make_record(n - 1, k, 32000);
      ASSERT_FALSE(w.completed(*r.id, r.sample));
      if (n > 1) {
        ASSERT_TRUE(w.completed(*make_record(0, k, 32000).id, 0));
      }
      ASSERT_EQ(w.append(r), n - 1);
      w.close();
      ASSERT_EQ(slurp(records_path), full_records);
      ASSERT_EQ(slurp(last_shard), full_shard);
      states++;
    };
    // Killed while writing the shard bytes, or after them but before the line.
    for (uint64_t cut = start; cut <= end; cut++) {
      check_state(full_records.substr(0, line_start), full_shard.substr(0, cut));
      if (HasFatalFailure()) return;
    }
    // Killed while writing the line.
    for (size_t cut = line_start + 1; cut < full_records.size(); cut++) {
      check_state(full_records.substr(0, cut), full_shard);
      if (HasFatalFailure()) return;
    }
    std::printf("[dataset] %s: %d crash states recovered\n",
                n == 1      ? "first record of the dataset"
                : own_shard ? "last record in a new shard"
                            : "last record in the same shard",
                states);
    const DatasetReader rd = DatasetReader::open(dir.path());
    for (int i = 0; i < n; i++) expect_record(rd, i, k);
  }
}

TEST(Dataset, DamageIsAnErrorNamingTheFileAndRecord) {
  TempDir dir("damage");
  const int k = 6;
  const DatasetHeader header = test_header(k, LogprobEncoding::Compact);
  {
    DatasetWriter w = DatasetWriter::open(dir.path(), header, false);
    for (int i = 0; i < 5; i++) w.append(make_record(i, k, 32000));
  }
  const std::string d = dir.path();
  const std::string records = slurp(d + "/records.jsonl");
  const std::string shard = slurp(d + "/shard-00000.bin");
  const nlohmann::json r1 = DatasetReader::open(d).record_json(1);
  const nlohmann::json r4 = DatasetReader::open(d).record_json(4);
  const uint64_t off1 = r1["offset"], off4 = r4["offset"], bytes4 = r4["bytes"];
  auto restore = [&] {
    spit(d + "/records.jsonl", records);
    spit(d + "/shard-00000.bin", shard);
  };

  // A records.jsonl line that is not JSON.
  {
    std::string bad = records;
    const size_t second = bad.find('\n') + 1;
    bad[second] = '#';
    spit(d + "/records.jsonl", bad);
    const std::string e = error_of([&] { DatasetReader::open(d); });
    EXPECT_EQ(e.rfind(d + "/records.jsonl line 2: not JSON: ", 0), 0u) << e;
    restore();
  }
  // A number JSON can parse but not hold (1e999) is the same clear error, not a foreign throw.
  {
    std::string bad = records;
    const size_t second = bad.find('\n') + 1;
    bad.insert(second + 1, "\"x\":1e999,");
    spit(d + "/records.jsonl", bad);
    const std::string e = error_of([&] { DatasetReader::open(d); });
    EXPECT_EQ(e.rfind(d + "/records.jsonl line 2: not JSON: ", 0), 0u) << e;
    restore();
  }
  // A shard cut inside the last record.
  {
    spit(d + "/shard-00000.bin", shard.substr(0, off4 + 10));
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); }),
              fmt::format("{}/shard-00000.bin: record 4 at offset {} is truncated: expected {} "
                          "bytes, found 10", d, off4, bytes4));
    // The writer will not build on it either: the line says the bytes were durable.
    EXPECT_NE(error_of([&] { DatasetWriter::open(d, header, true); })
                  .find("record 4 at offset " + std::to_string(off4) + " is truncated"),
              std::string::npos);
    restore();
  }
  // A flipped payload byte: the record's checksum.
  {
    std::string bad = shard;
    bad[off1 + 30] ^= 0x40;
    spit(d + "/shard-00000.bin", bad);
    const DatasetReader rd = DatasetReader::open(d);
    EXPECT_NO_THROW(rd.read(0));
    const std::string e = error_of([&] { rd.read(1); });
    EXPECT_EQ(e.rfind(fmt::format("{}/shard-00000.bin: record 1 at offset {}: checksum mismatch",
                                  d, off1), 0),
              0u) << e;
    EXPECT_EQ(error_of([&] { rd.verify(); }), e);
    restore();
  }
  // A damaged record header.
  {
    std::string bad = shard;
    bad[off1] = 'X';
    spit(d + "/shard-00000.bin", bad);
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); }),
              fmt::format("{}/shard-00000.bin: record 1 at offset {}: bad record magic 0x43455258 "
                          "(expected 0x43455244, \"DREC\")", d, off1));
    restore();
  }
  // The shard header: magic, then checksum.
  {
    std::string bad = shard;
    bad[0] = 'X';
    spit(d + "/shard-00000.bin", bad);
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); }),
              d + "/shard-00000.bin: not a distill dataset shard (bad magic)");
    bad = shard;
    bad[20] ^= 1;  // the vocabulary size field
    spit(d + "/shard-00000.bin", bad);
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); })
                  .rfind(d + "/shard-00000.bin: header checksum mismatch (stored 0x", 0),
              0u);
    restore();
  }
  // dataset.json and the shard disagree on the tokenizer.
  {
    const std::string json = slurp(d + "/dataset.json");
    nlohmann::json j = nlohmann::json::parse(json);
    j["tokenizer_fingerprint"] = "abcdef";  // a different length: a different header size
    spit(d + "/dataset.json", j.dump());
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); }),
              d + "/shard-00000.bin was written with tokenizer fingerprint 00c0ffee12345678, "
                  "dataset.json says abcdef");
    spit(d + "/dataset.json", json);
  }
  // A line that does not follow the previous record.
  {
    std::string bad = records;
    const std::string key = "\"offset\":" + std::to_string(off1);
    const size_t at = bad.find(key);
    ASSERT_NE(at, std::string::npos);
    bad.replace(at, key.size(), "\"offset\":" + std::to_string(off1 + 1));
    spit(d + "/records.jsonl", bad);
    EXPECT_EQ(error_of([&] { DatasetReader::open(d); }),
              fmt::format("{}/records.jsonl line 2: record 1 is at offset {} of shard 0, expected "
                          "{} (the end of record 0)", d, off1 + 1, off1));
    restore();
  }
  const DatasetReader rd = DatasetReader::open(d);
  rd.verify();
  EXPECT_EQ(error_of([&] { rd.read(5); }),
            fmt::format("dataset {}: record 5 does not exist (5 records)", d));
}

TEST(Dataset, TokenizerMismatchesAreClearErrors) {
  TempDir dir("tokenizer");
  const DatasetHeader header = test_header(8, LogprobEncoding::Compact);
  {
    DatasetWriter w = DatasetWriter::open(dir.path(), header, false);
    w.append(make_record(0, 8, 32000));
  }
  const std::string d = dir.path();
  DatasetHeader other = header;
  other.tokenizer_fingerprint = "0123456789ABCDEF";
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, other, true); }),
            "dataset " + d + " was written with tokenizer fingerprint 00c0ffee12345678, this run "
                             "uses 0123456789abcdef");
  other = header;
  other.k = 20;
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, other, true); }),
            "dataset " + d + " was written with top-k 8, this run uses 20");
  other = header;
  other.vocab_size = 50257;
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, other, true); }),
            "dataset " + d + " was written with vocabulary size 32000, this run uses 50257");
  other = header;
  other.encoding = LogprobEncoding::Exact;
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, other, true); }),
            "dataset " + d + " was written with the compact encoding, this run uses exact");

  const DatasetReader rd = DatasetReader::open(d);
  EXPECT_NO_THROW(rd.check_compatible("00C0FFEE12345678", 32000));
  EXPECT_EQ(error_of([&] { rd.check_compatible("feedface", 32000); }),
            "dataset " + d + " uses tokenizer fingerprint 00c0ffee12345678 but the student's "
                             "tokenizer is feedface");
  EXPECT_EQ(error_of([&] { rd.check_compatible("00c0ffee12345678", 32001); }),
            "dataset " + d + " has a vocabulary of 32000 tokens but the student's tokenizer has "
                             "32001");
  other = header;
  other.tokenizer_fingerprint = "not hex!";
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d + "_new", other, false); }),
            "tokenizer fingerprint 'not hex!' is not a hex string (character 'n')");
  other.tokenizer_fingerprint = "abc";
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d + "_new", other, false); }),
            "tokenizer fingerprint 'abc' is not a hex string of whole bytes");
  EXPECT_FALSE(fs::exists(d + "_new"));
}

TEST(Dataset, WriterRejectsBadRecordsDuplicatesAndASecondWriter) {
  TempDir dir("reject");
  const std::string d = dir.path();
  const DatasetHeader header = test_header(8, LogprobEncoding::Compact);
  DatasetWriter w = DatasetWriter::open(d, header, false);
  const DatasetRecord good = make_record(0, 8, 32000);
  w.append(good);
  const std::string who = "dataset " + d + " record 1 (id 'prompt-0', sample 0)";
  EXPECT_EQ(error_of([&] { w.append(good); }),
            who + ": this (id, sample) is already in the dataset");
  DatasetRecord bad = good;
  bad.sample = 1;
  const std::string who1 = "dataset " + d + " record 1 (id 'prompt-0', sample 1)";
  bad.tokens[2] = 32000;
  EXPECT_EQ(error_of([&] { w.append(bad); }),
            who1 + ": token 2 is 32000, outside the vocabulary (32000)");
  bad = good;
  bad.sample = 1;
  bad.rows.tail.pop_back();
  bad.rows.ids.resize(bad.rows.ids.size() - 8);
  bad.rows.logprobs.resize(bad.rows.logprobs.size() - 8);
  EXPECT_EQ(error_of([&] { w.append(bad); }),
            fmt::format("{}: {} teacher rows for {} target tokens ({} tokens, first target {})",
                        who1, good.rows.rows() - 1, good.rows.rows(), good.tokens.size(),
                        good.prompt_tokens));
  bad = good;
  bad.sample = 1;
  bad.rows.ids[1] = bad.rows.ids[0];
  EXPECT_EQ(error_of([&] { w.append(bad); }),
            fmt::format("{}: teacher row 0: token id {} appears twice", who1, bad.rows.ids[0]));
  bad = good;
  bad.sample = 1;
  bad.extra["offset"] = 3;
  EXPECT_EQ(error_of([&] { w.append(bad); }), who1 + ": extra field 'offset' is reserved");
  EXPECT_EQ(w.size(), 1);  // nothing half-written

  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, header, true); }),
            "dataset " + d + " is being written by another process (records.jsonl is locked)");
  w.close();
  EXPECT_EQ(error_of([&] { DatasetWriter::open(d, header, false); }),
            "dataset " + d + " already exists (resume it, or write to another directory)");
  DatasetWriter again = DatasetWriter::open(d, header, true);
  EXPECT_EQ(again.size(), 1);
  EXPECT_TRUE(again.completed("prompt-0", 0));
  EXPECT_EQ(again.completed_keys().size(), 1u);
  again.close();

  // A resumed run with another teacher: its records say so, the header keeps the first one.
  DatasetHeader next = header;
  next.teacher = "other-teacher";
  DatasetWriter third = DatasetWriter::open(d, next, true);
  third.append(make_record(1, 8, 32000));
  third.close();
  EXPECT_EQ(DatasetReader::open(d).record_json(1)["teacher"], "other-teacher");
  EXPECT_EQ(DatasetReader::open(d).header().teacher, "test-teacher");

  // Stopped between dataset.json and records.jsonl: an empty dataset.
  fs::remove(d + "/records.jsonl");
  EXPECT_EQ(DatasetReader::open(d).size(), 0);
}

}  // namespace
}  // namespace distill
