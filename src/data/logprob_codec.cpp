#include "data/logprob_codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace distill {

static_assert(std::endian::native == std::endian::little,
              "the dataset formats are little-endian and read by memcpy");

namespace {

// ---- the compact grid --------------------------------------------------------------------
// sqrt(p) steps of 1 / kSqrtSteps above p0 = (kLogBoundary / kSqrtSteps)^2; below p0 steps of
// 2 / kLogBoundary nats (the sqrt grid's log-step at p0, so the grid is smooth there) down to
// about kMinLogprob. Everything below that decodes to the floor: a token more than 40 nats
// below certainty carries < 5e-18 of probability.
constexpr int kSqrtSteps = 480;
constexpr int kLogBoundary = 4;
constexpr double kMinLogprob = -40.0;
constexpr int kTailBits = 12;  // asin(sqrt(tail)) on [0, pi/2]
constexpr uint32_t kTailMax = (1u << kTailBits) - 1;

struct Grid {
  double log_boundary;      // log p0
  double log_step;          // nats per code below p0
  int num_log_codes;        // codes [0, num_log_codes) are the log region
  int num_codes;            // all codes
  int code_bits;            // bits of a code
  std::vector<double> logprob;  // (num_codes) the log-probability each code decodes to
  std::vector<double> prob;     // (num_codes) exp(logprob)

  Grid() {
    log_boundary = 2.0 * std::log(double(kLogBoundary) / kSqrtSteps);
    log_step = 2.0 / kLogBoundary;
    num_log_codes = int(std::ceil((log_boundary - kMinLogprob) / log_step));
    num_codes = num_log_codes + kSqrtSteps - kLogBoundary + 1;
    code_bits = std::bit_width(unsigned(num_codes - 1));
    logprob.resize(num_codes);
    prob.resize(num_codes);
    for (int c = 0; c < num_codes; c++) {
      logprob[c] = decode(c);
      prob[c] = std::exp(logprob[c]);
    }
  }
  double decode(int c) const {
    if (c < num_log_codes) return log_boundary - (num_log_codes - c) * log_step;
    const double s = double(c - num_log_codes + kLogBoundary) / kSqrtSteps;
    return 2.0 * std::log(s);
  }
  int encode(double lp) const {
    lp = std::min(lp, 0.0);
    const double u = std::exp(0.5 * lp) * kSqrtSteps;
    if (u >= kLogBoundary)
      return std::min(num_codes - 1, num_log_codes + int(std::lround(u)) - kLogBoundary);
    const double c = std::round((lp - log_boundary) / log_step) + num_log_codes;
    return int(std::clamp(c, 0.0, double(num_log_codes)));
  }
};

const Grid& grid() {
  static const Grid g;
  return g;
}

uint32_t tail_encode(double tail) {
  const double t = std::clamp(tail, 0.0, 1.0);
  return uint32_t(std::lround(std::asin(std::sqrt(t)) / (M_PI / 2) * kTailMax));
}
double tail_decode(uint32_t code) {
  const double s = std::sin(double(code) / kTailMax * (M_PI / 2));
  return s * s;
}

// ---- bits --------------------------------------------------------------------------------
// LSB-first bit stream.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}
  void put(uint64_t value, int bits) {  // bits <= 56
    acc_ |= value << n_;
    n_ += bits;
    while (n_ >= 8) {
      out_.push_back(uint8_t(acc_));
      acc_ >>= 8;
      n_ -= 8;
    }
  }
  void put_zeros(uint64_t count) {
    for (; count >= 32; count -= 32) put(0, 32);
    put(0, int(count));
  }
  void flush() {
    if (n_ > 0) out_.push_back(uint8_t(acc_));
    acc_ = 0;
    n_ = 0;
  }

 private:
  std::vector<uint8_t>& out_;
  uint64_t acc_ = 0;
  int n_ = 0;
};

class BitReader {
 public:
  BitReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t get(int bits) {  // bits <= 56
    fill(bits);
    const uint64_t v = bits == 0 ? 0 : acc_ & (~uint64_t(0) >> (64 - bits));
    acc_ >>= bits;
    n_ -= bits;
    return v;
  }
  // Zeros before the next 1 bit (which is consumed); more than `limit` zeros is corruption.
  uint64_t unary(uint64_t limit) {
    uint64_t zeros = 0;
    for (;;) {
      if (n_ == 0) fill(1);
      if (acc_ != 0) {
        const int z = std::countr_zero(acc_);
        if (z < n_) {
          zeros += uint64_t(z);
          acc_ >>= z + 1;
          n_ -= z + 1;
          break;
        }
      }
      zeros += uint64_t(n_);
      acc_ = 0;
      n_ = 0;
      if (zeros > limit) throw Error("corrupt compact rows: a unary code is too long");
    }
    if (zeros > limit) throw Error("corrupt compact rows: a unary code is too long");
    return zeros;
  }
  // Bytes consumed (the last one partly); whole bytes loaded ahead do not count.
  size_t bytes_used() const { return pos_ - size_t(n_ / 8); }

 private:
  void fill(int bits) {
    if (n_ < bits && size_ - pos_ >= 8) {  // whole bytes that fit in the accumulator at once
      uint64_t w;
      std::memcpy(&w, data_ + pos_, 8);
      const int take = (63 - n_) >> 3;  // 1..7 bytes
      acc_ |= (w & ((uint64_t(1) << (8 * take)) - 1)) << n_;
      pos_ += size_t(take);
      n_ += 8 * take;
    }
    while (n_ < bits) {
      if (pos_ >= size_)
        throw Error("compact rows end early: needed more than {} bytes", size_);
      acc_ |= uint64_t(data_[pos_++]) << n_;
      n_ += 8;
    }
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t acc_ = 0;
  int n_ = 0;
};

// ---- universal codes with a per-row parameter ----------------------------------------------
// Selector: 1 bit family (0 Rice, 1 exp-Golomb) + 4 bits parameter. Rice(b) suits geometric
// values (id gaps); exp-Golomb(k) heavy-tailed ones (probability codes: many unlikely tokens,
// a few likely ones far above them).
constexpr int kSelectorBits = 5;

uint64_t rice_bits(uint32_t v, int b) { return (uint64_t(v) >> b) + 1 + uint64_t(b); }
uint64_t eg_bits(uint32_t v, int k) {
  const int z = std::bit_width((uint64_t(v) >> k) + 1) - 1;
  return uint64_t(2 * z + 1 + k);
}

int choose_selector(const uint32_t* v, int n, uint64_t* bits_out = nullptr) {
  uint64_t best = ~uint64_t(0);
  int best_sel = 0;
  for (int sel = 0; sel < 32; sel++) {
    const int p = sel & 15;
    uint64_t bits = 0;
    for (int i = 0; i < n; i++) bits += (sel < 16) ? rice_bits(v[i], p) : eg_bits(v[i], p);
    if (bits < best) {
      best = bits;
      best_sel = sel;
    }
  }
  if (bits_out != nullptr) *bits_out = best + kSelectorBits;
  return best_sel;
}

void put_values(BitWriter& w, const uint32_t* v, int n) {
  const int sel = choose_selector(v, n);
  w.put(uint64_t(sel), kSelectorBits);
  const int p = sel & 15;
  for (int i = 0; i < n; i++) {
    if (sel < 16) {
      w.put_zeros(v[i] >> p);
      w.put(1, 1);
      w.put(v[i] & ((1u << p) - 1), p);
    } else {
      const uint64_t x = (uint64_t(v[i]) >> p) + 1;
      const int z = std::bit_width(x) - 1;
      w.put_zeros(uint64_t(z));
      w.put(1, 1);
      w.put(x & ((uint64_t(1) << z) - 1), z);
      w.put(v[i] & ((1u << p) - 1), p);
    }
  }
}

// Values must be < 2^32; longer codes are corruption.
void get_values(BitReader& r, uint32_t* v, int n) {
  const int sel = int(r.get(kSelectorBits));
  const int p = sel & 15;
  for (int i = 0; i < n; i++) {
    uint64_t x;
    if (sel < 16) {
      const uint64_t q = r.unary(uint64_t(0xffffffffu) >> p);
      x = (q << p) | r.get(p);
    } else {
      const int z = int(r.unary(32 - p));
      const uint64_t hi = ((uint64_t(1) << z) | r.get(z)) - 1;
      x = (hi << p) | r.get(p);
    }
    if (x > 0xffffffffu) throw Error("corrupt compact rows: a value exceeds 32 bits");
    v[i] = uint32_t(x);
  }
}

// Binary interpolative coding (Moffat & Stuiver 2000) of a sorted set of distinct ids: the
// middle element is coded in minimal binary within the range its neighbours leave, then each
// half recursively. Near log2 C(V, n) bits for a uniform set, and fewer for a clustered one (a
// teacher's top k gathers in the frequent, low ids of a BPE vocabulary) without a parameter.
void put_minimal(BitWriter& w, uint64_t v, uint64_t range) {  // v < range
  if (range <= 1) return;
  const int b = std::bit_width(range) - 1;  // floor(log2 range)
  const uint64_t u = (uint64_t(2) << b) - range;  // codes of b bits
  if (v < u) {
    w.put(v, b);
  } else {
    w.put((v + u) >> 1, b);
    w.put((v + u) & 1, 1);
  }
}
uint64_t get_minimal(BitReader& r, uint64_t range) {
  if (range <= 1) return 0;
  const int b = std::bit_width(range) - 1;
  const uint64_t u = (uint64_t(2) << b) - range;
  const uint64_t x = r.get(b);
  if (x < u) return x;
  return ((x << 1) | r.get(1)) - u;
}
void put_interpolative(BitWriter& w, const uint32_t* a, int n, uint64_t lo, uint64_t hi) {
  // a[0..n) sorted, distinct, in [lo, hi]
  if (n == 0) return;
  const int m = n / 2;
  const uint64_t first = lo + m, last = hi - (n - 1 - m);
  put_minimal(w, a[m] - first, last - first + 1);
  put_interpolative(w, a, m, lo, a[m] - 1);
  put_interpolative(w, a + m + 1, n - m - 1, a[m] + 1, hi);
}
uint64_t interpolative_bits(const uint32_t* a, int n, uint64_t lo, uint64_t hi) {
  if (n == 0) return 0;
  const int m = n / 2;
  const uint64_t first = lo + m, range = hi - (n - 1 - m) - first + 1, v = a[m] - first;
  uint64_t bits = 0;
  if (range > 1) {
    const int b = std::bit_width(range) - 1;
    bits = uint64_t(b) + (v < (uint64_t(2) << b) - range ? 0 : 1);
  }
  return bits + interpolative_bits(a, m, lo, a[m] - 1) +
         interpolative_bits(a + m + 1, n - m - 1, uint64_t(a[m]) + 1, hi);
}
void get_interpolative(BitReader& r, uint32_t* a, int n, uint64_t lo, uint64_t hi) {
  if (n == 0) return;
  const int m = n / 2;
  const uint64_t first = lo + m, last = hi - (n - 1 - m);
  a[m] = uint32_t(first + get_minimal(r, last - first + 1));
  get_interpolative(r, a, m, lo, a[m] - 1);
  get_interpolative(r, a + m + 1, n - m - 1, uint64_t(a[m]) + 1, hi);
}

// ---- exact -------------------------------------------------------------------------------
template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void encode_exact(const TopkRows& rows, std::vector<uint8_t>& out) {
  for (int r = 0; r < rows.rows(); r++) {
    const int n = rows.count(r);
    const size_t at = out.size();
    out.resize(at + 2 + size_t(n) * 8 + 4);
    uint8_t* p = out.data() + at;
    const uint16_t n16 = uint16_t(n);
    std::memcpy(p, &n16, 2);
    std::memcpy(p + 2, rows.ids.data() + size_t(r) * rows.k, size_t(n) * 4);
    std::memcpy(p + 2 + size_t(n) * 4, rows.logprobs.data() + size_t(r) * rows.k, size_t(n) * 4);
    std::memcpy(p + 2 + size_t(n) * 8, &rows.tail[r], 4);
  }
}

size_t decode_exact(const uint8_t* data, size_t size, int num_rows, int64_t vocab_size,
                    TopkRows& out) {
  size_t pos = 0;
  const int k = out.k;
  for (int r = 0; r < num_rows; r++) {
    if (size - pos < 2) throw Error("exact rows end early at row {}", r);
    uint16_t n;
    std::memcpy(&n, data + pos, 2);
    if (n > k) throw Error("corrupt exact rows: row {} has {} entries, k is {}", r, n, k);
    const size_t need = 2 + size_t(n) * 8 + 4;
    if (size - pos < need) throw Error("exact rows end early at row {}", r);
    int32_t* ids = out.ids.data() + size_t(r) * k;
    float* lps = out.logprobs.data() + size_t(r) * k;
    std::memcpy(ids, data + pos + 2, size_t(n) * 4);
    std::memcpy(lps, data + pos + 2 + size_t(n) * 4, size_t(n) * 4);
    std::memcpy(&out.tail[r], data + pos + 2 + size_t(n) * 8, 4);
    for (int i = 0; i < n; i++)
      if (ids[i] < 0 || ids[i] >= vocab_size)
        throw Error("corrupt exact rows: row {} has token id {} outside the vocabulary ({})", r,
                    ids[i], vocab_size);
    pos += need;
  }
  return pos;
}

// ---- compact -----------------------------------------------------------------------------
void encode_compact(const TopkRows& rows, int64_t vocab_size, std::vector<uint8_t>& out) {
  const Grid& g = grid();
  const int k = rows.k;
  const int count_bits = std::bit_width(unsigned(k));
  BitWriter w(out);
  std::vector<int> order(k);
  std::vector<uint32_t> sorted_ids(k), gaps(k), codes(k);
  for (int r = 0; r < rows.rows(); r++) {
    const int n = rows.count(r);
    const int32_t* ids = rows.ids.data() + size_t(r) * k;
    const float* lps = rows.logprobs.data() + size_t(r) * k;
    w.put(n == k ? 1 : 0, 1);
    if (n != k) w.put(uint64_t(n), count_bits);
    uint32_t tail = tail_encode(rows.tail[r]);
    // A row with entries keeps some mass: its log-probabilities stay finite after rescaling.
    if (n > 0) tail = std::min(tail, kTailMax - 1);
    w.put(tail, kTailBits);
    if (n == 0) continue;
    std::iota(order.begin(), order.begin() + n, 0);
    std::sort(order.begin(), order.begin() + n, [&](int a, int b) { return ids[a] < ids[b]; });
    uint32_t cmin = ~0u;
    for (int i = 0; i < n; i++) {
      const int j = order[i];
      sorted_ids[i] = uint32_t(ids[j]);
      gaps[i] = i == 0 ? sorted_ids[0] : sorted_ids[i] - sorted_ids[i - 1] - 1;
      codes[i] = uint32_t(g.encode(double(lps[j])));
      cmin = std::min(cmin, codes[i]);
    }
    // Ids: interpolative coding or gaps, whichever is shorter for this row (1 bit says which).
    uint64_t gap_bits = 0;
    choose_selector(gaps.data(), n, &gap_bits);
    if (interpolative_bits(sorted_ids.data(), n, 0, uint64_t(vocab_size - 1)) <= gap_bits) {
      w.put(1, 1);
      put_interpolative(w, sorted_ids.data(), n, 0, uint64_t(vocab_size - 1));
    } else {
      w.put(0, 1);
      put_values(w, gaps.data(), n);
    }
    w.put(cmin, g.code_bits);
    for (int i = 0; i < n; i++) codes[i] -= cmin;
    put_values(w, codes.data(), n);
  }
  w.flush();
}

size_t decode_compact(const uint8_t* data, size_t size, int num_rows, int64_t vocab_size,
                      TopkRows& out) {
  const Grid& g = grid();
  const int k = out.k;
  const int count_bits = std::bit_width(unsigned(k));
  BitReader rd(data, size);
  std::vector<uint32_t> sorted_ids(k), codes(k);
  std::vector<uint64_t> order(k);
  for (int r = 0; r < num_rows; r++) {
    const int n = rd.get(1) ? k : int(rd.get(count_bits));
    if (n > k) throw Error("corrupt compact rows: row {} has {} entries, k is {}", r, n, k);
    const double tail = tail_decode(uint32_t(rd.get(kTailBits)));
    out.tail[r] = float(tail);
    if (n == 0) continue;
    if (n > vocab_size)
      throw Error("corrupt compact rows: row {} has {} entries, the vocabulary {}", r, n,
                  vocab_size);
    if (rd.get(1)) {
      get_interpolative(rd, sorted_ids.data(), n, 0, uint64_t(vocab_size - 1));
    } else {
      get_values(rd, sorted_ids.data(), n);
      int64_t id = -1;  // 64 bits: corrupt gaps cannot wrap around
      for (int i = 0; i < n; i++) {
        id += int64_t(sorted_ids[i]) + 1;
        if (id >= vocab_size)
          throw Error("corrupt compact rows: row {} has token id {} outside the vocabulary ({})",
                      r, id, vocab_size);
        sorted_ids[i] = uint32_t(id);
      }
    }
    const uint32_t cmin = uint32_t(rd.get(g.code_bits));
    get_values(rd, codes.data(), n);
    int32_t* ids = out.ids.data() + size_t(r) * k;
    float* lps = out.logprobs.data() + size_t(r) * k;
    // Canonical order: descending code (probability), ties by ascending id (= position here).
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
      const uint64_t c = uint64_t(codes[i]) + cmin;
      if (c >= uint64_t(g.num_codes))
        throw Error("corrupt compact rows: row {} has probability code {} (at most {})", r, c,
                    g.num_codes - 1);
      sum += g.prob[c];
      order[i] = (uint64_t(g.num_codes - 1 - c) << 32) | uint64_t(i);
    }
    std::sort(order.begin(), order.begin() + n);
    // Rescale so that the entries and the tail sum to 1.
    const double shift = std::log(std::max(1.0 - tail, 1e-300)) - std::log(sum);
    for (int i = 0; i < n; i++) {
      const uint32_t j = uint32_t(order[i]);
      const int c = g.num_codes - 1 - int(order[i] >> 32);
      ids[i] = int32_t(sorted_ids[j]);
      lps[i] = float(g.logprob[c] + shift);
    }
  }
  return rd.bytes_used();
}

}  // namespace

const char* logprob_encoding_name(LogprobEncoding encoding) {
  switch (encoding) {
    case LogprobEncoding::Exact: return "exact";
    case LogprobEncoding::Compact: return "compact";
  }
  return "?";
}

LogprobEncoding logprob_encoding_from_name(std::string_view name) {
  if (name == "exact") return LogprobEncoding::Exact;
  if (name == "compact") return LogprobEncoding::Compact;
  throw Error("unknown logprob encoding '{}' (expected exact or compact)", name);
}

LogprobEncoding logprob_encoding_from_id(uint32_t id) {
  if (id == uint32_t(LogprobEncoding::Exact) || id == uint32_t(LogprobEncoding::Compact))
    return LogprobEncoding(id);
  throw Error("unknown logprob encoding id {} (1 = exact, 2 = compact)", id);
}

int TopkRows::count(int row) const {
  const int32_t* r = ids.data() + size_t(row) * k;
  int n = 0;
  while (n < k && r[n] >= 0) n++;
  return n;
}

void TopkRows::resize(int num_rows, int new_k) {
  k = new_k;
  ids.assign(size_t(num_rows) * k, -1);
  logprobs.assign(size_t(num_rows) * k, -INFINITY);
  tail.assign(size_t(num_rows), 1.0f);
}

void TopkRows::append(const int32_t* row_ids, const float* row_logprobs, int n, float tail_mass) {
  if (n < 0 || n > k) throw Error("a top-k row has {} entries, k is {}", n, k);
  const size_t at = ids.size();
  ids.resize(at + k, -1);
  logprobs.resize(at + k, -INFINITY);
  std::copy(row_ids, row_ids + n, ids.begin() + at);
  std::copy(row_logprobs, row_logprobs + n, logprobs.begin() + at);
  tail.push_back(tail_mass < 0.0f ? derived_tail(row_logprobs, n) : tail_mass);
}

float derived_tail(const float* logprobs, int n) {
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += std::exp(double(logprobs[i]));
  return float(std::max(0.0, 1.0 - sum));
}

void topk_rows_check(const TopkRows& rows, int64_t vocab_size) {
  const int k = rows.k;
  if (k <= 0 || k > 65535) throw Error("top-k size {} is outside [1, 65535]", k);
  const size_t n = size_t(rows.rows()) * k;
  if (rows.ids.size() != n || rows.logprobs.size() != n)
    throw Error("top-k rows: {} ids and {} log-probabilities for {} rows of {}", rows.ids.size(),
                rows.logprobs.size(), rows.rows(), k);
  std::vector<int32_t> seen;
  for (int r = 0; r < rows.rows(); r++) {
    const int32_t* ids = rows.ids.data() + size_t(r) * k;
    const float* lps = rows.logprobs.data() + size_t(r) * k;
    const int c = rows.count(r);
    for (int i = c; i < k; i++)
      if (ids[i] != -1)
        throw Error("row {}: entry {} has token id {} (expected an id in [0, {}), or -1 as "
                    "padding at the end of the row)", r, i, ids[i], vocab_size);
    for (int i = 0; i < c; i++) {
      if (ids[i] >= vocab_size)
        throw Error("row {}: token id {} is outside the vocabulary ({})", r, ids[i], vocab_size);
      if (!std::isfinite(lps[i]) || lps[i] > 1e-3f)
        throw Error("row {}: token {} has log-probability {} (expected finite and <= 0)", r,
                    ids[i], lps[i]);
    }
    seen.assign(ids, ids + c);
    std::sort(seen.begin(), seen.end());
    const auto dup = std::adjacent_find(seen.begin(), seen.end());
    if (dup != seen.end()) throw Error("row {}: token id {} appears twice", r, *dup);
    const float t = rows.tail[r];
    if (!std::isfinite(t) || t < 0.0f || t > 1.001f)
      throw Error("row {}: tail mass {} is outside [0, 1]", r, t);
  }
}

void topk_rows_sort(TopkRows& rows) {
  const int k = rows.k;
  std::vector<std::pair<float, int32_t>> e(k);
  for (int r = 0; r < rows.rows(); r++) {
    const int n = rows.count(r);
    int32_t* ids = rows.ids.data() + size_t(r) * k;
    float* lps = rows.logprobs.data() + size_t(r) * k;
    for (int i = 0; i < n; i++) e[i] = {lps[i], ids[i]};
    std::sort(e.begin(), e.begin() + n, [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (int i = 0; i < n; i++) {
      lps[i] = e[i].first;
      ids[i] = e[i].second;
    }
  }
}

void encode_topk_rows(LogprobEncoding encoding, const TopkRows& rows, int64_t vocab_size,
                      std::vector<uint8_t>& out) {
  if (encoding == LogprobEncoding::Exact) return encode_exact(rows, out);
  encode_compact(rows, vocab_size, out);
}

size_t decode_topk_rows(LogprobEncoding encoding, const uint8_t* data, size_t size, int num_rows,
                        int k, int64_t vocab_size, TopkRows& out) {
  out.resize(num_rows, k);
  if (encoding == LogprobEncoding::Exact)
    return decode_exact(data, size, num_rows, vocab_size, out);
  return decode_compact(data, size, num_rows, vocab_size, out);
}

double topk_bucket_kl(const int32_t* a_ids, const float* a_logprobs, float a_tail,
                      const int32_t* b_ids, const float* b_logprobs, float b_tail, int n) {
  // Log-domain throughout: a teacher may give log-probabilities like -9999 (exp underflows).
  auto log_norm = [n](const float* lps, float tail) {
    double mx = tail > 0.0f ? std::log(double(tail)) : -INFINITY;
    for (int i = 0; i < n; i++) mx = std::max(mx, double(lps[i]));
    double s = tail > 0.0f ? std::exp(std::log(double(tail)) - mx) : 0.0;
    for (int i = 0; i < n; i++) s += std::exp(double(lps[i]) - mx);
    return mx + std::log(s);
  };
  const double za = log_norm(a_logprobs, a_tail), zb = log_norm(b_logprobs, b_tail);
  std::vector<int> ob(n);
  std::iota(ob.begin(), ob.end(), 0);
  std::sort(ob.begin(), ob.end(), [&](int x, int y) { return b_ids[x] < b_ids[y]; });
  double kl = 0.0;
  for (int i = 0; i < n; i++) {
    const auto it = std::lower_bound(ob.begin(), ob.end(), a_ids[i],
                                     [&](int j, int32_t id) { return b_ids[j] < id; });
    if (it == ob.end() || b_ids[*it] != a_ids[i])
      throw Error("topk_bucket_kl: token {} is missing from the second row", a_ids[i]);
    const double la = double(a_logprobs[i]) - za, lb = double(b_logprobs[*it]) - zb;
    kl += std::exp(la) * (la - lb);
  }
  if (a_tail > 0.0f) {
    const double la = std::log(double(a_tail)) - za;
    const double lb = b_tail > 0.0f ? std::log(double(b_tail)) - zb : -INFINITY;
    kl += std::exp(la) * (la - lb);
  }
  return std::max(kl, 0.0);
}

CodecMeasurement measure_logprob_codec(LogprobEncoding encoding, const TopkRows& rows,
                                       int64_t vocab_size) {
  topk_rows_check(rows, vocab_size);
  TopkRows sorted = rows;
  topk_rows_sort(sorted);
  std::vector<uint8_t> bytes;
  encode_topk_rows(encoding, sorted, vocab_size, bytes);
  TopkRows decoded;
  const size_t used =
      decode_topk_rows(encoding, bytes.data(), bytes.size(), sorted.rows(), sorted.k, vocab_size,
                       decoded);
  DISTILL_CHECK(used == bytes.size());
  CodecMeasurement m;
  m.rows = sorted.rows();
  if (m.rows == 0) return m;
  m.bytes_per_row = double(bytes.size()) / double(m.rows);
  double kl_sum = 0.0;
  const int k = sorted.k;
  for (int r = 0; r < sorted.rows(); r++) {
    const int n = sorted.count(r);
    DISTILL_CHECK(decoded.count(r) == n);
    const size_t at = size_t(r) * k;
    const double kl = topk_bucket_kl(decoded.ids.data() + at, decoded.logprobs.data() + at,
                                     decoded.tail[r], sorted.ids.data() + at,
                                     sorted.logprobs.data() + at, sorted.tail[r], n);
    kl_sum += kl;
    m.kl_max = std::max(m.kl_max, kl);
    // Entries may be reordered by quantization ties: compare by id.
    std::vector<std::pair<int32_t, float>> a(n), b(n);
    for (int i = 0; i < n; i++) {
      a[i] = {decoded.ids[at + i], decoded.logprobs[at + i]};
      b[i] = {sorted.ids[at + i], sorted.logprobs[at + i]};
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    for (int i = 0; i < n; i++)
      m.max_abs_logprob_error =
          std::max(m.max_abs_logprob_error, std::abs(double(a[i].second) - b[i].second));
  }
  m.kl_mean = kl_sum / double(m.rows);
  return m;
}

}  // namespace distill
