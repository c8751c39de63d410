#include "tokenizer/bpe_trainer.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace distill {

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using WordMap = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;

}  // namespace

// Word counts: one map per thread, merged when training starts.
struct BpeTrainer::Counts {
  Regex regex{kGpt2Pattern};
  std::vector<WordMap> per_thread;
  int64_t seen = 0;

  WordMap& map(int thread) { return per_thread[size_t(thread)]; }

  // Counts the words of text (one sequence); returns how many.
  int64_t count(std::string_view text, WordMap& words) const {
    int64_t n = 0;
    regex.for_each_match(text, [&](size_t b, size_t e) {
      const std::string_view w = text.substr(b, e - b);
      auto it = words.find(w);
      if (it != words.end()) it->second++;
      else words.emplace(std::string(w), 1);
      n++;
    });
    return n;
  }

  WordMap merged() const {
    WordMap all;
    for (const WordMap& m : per_thread)
      for (const auto& [w, c] : m) all[w] += c;
    return all;
  }
};

BpeTrainer::BpeTrainer(BpeTrainerOptions options)
    : options_(std::move(options)), counts_(std::make_unique<Counts>()) {
  const int min_vocab = int(options_.special_tokens.size()) + 256;
  if (options_.vocab_size < min_vocab)
    throw Error("BPE trainer: vocab_size {} is below {} (the special tokens and the 256 bytes)",
                options_.vocab_size, min_vocab);
  std::unordered_set<std::string> seen;
  for (const std::string& s : options_.special_tokens) {
    if (s.empty()) throw Error("BPE trainer: a special token is empty");
    if (!seen.insert(s).second) throw Error("BPE trainer: special token \"{}\" given twice", s);
    if (unicode::find_invalid_utf8(s) != std::string::npos)
      throw Error("BPE trainer: special token is not valid UTF-8");
  }
  counts_->per_thread.resize(size_t(std::max(1, omp_get_max_threads())));
}

BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add_text(std::string_view text, const std::string& source) {
  if (const size_t bad = unicode::find_invalid_utf8(text); bad != std::string::npos)
    throw Error("{}: invalid UTF-8 at byte {}", source, bad);
  counts_->seen += counts_->count(text, counts_->map(0));
}

void BpeTrainer::add_file(const std::string& path, const BpeProgress& progress) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("{}: cannot open", path);
  f.seekg(0, std::ios::end);
  const int64_t total = f.tellg();
  f.seekg(0);
  // Blocks of whole lines, each cut into lines that the threads share out.
  const size_t kBlock = std::max<size_t>(options_.read_block_bytes, 1);
  std::string block, carry;
  int64_t done = 0, line_no = 1;
  std::vector<std::string_view> lines;
  for (;;) {
    block = std::move(carry);
    carry.clear();
    const size_t old = block.size();
    block.resize(old + kBlock);
    f.read(block.data() + old, std::streamsize(kBlock));
    block.resize(old + size_t(f.gcount()));
    if (f.bad()) throw Error("{}: read error", path);
    const bool eof = f.gcount() == 0 || f.eof();
    if (!eof) {
      const size_t cut = block.rfind('\n');
      if (cut != std::string::npos) {
        carry = block.substr(cut + 1);
        block.resize(cut + 1);
      } else {
        carry = std::move(block);  // a line longer than a block: read on
        continue;
      }
    }
    if (block.empty()) break;
    if (const size_t bad = unicode::find_invalid_utf8(block); bad != std::string::npos)
      throw Error("{}:{}: invalid UTF-8 (the trainer reads UTF-8 text)", path,
                  line_no + std::count(block.begin(), block.begin() + bad, '\n'));
    lines.clear();
    for (size_t start = 0; start < block.size();) {
      size_t end = block.find('\n', start);
      end = end == std::string::npos ? block.size() : end + 1;
      lines.emplace_back(block.data() + start, end - start);
      start = end;
    }
    line_no += int64_t(std::count(block.begin(), block.end(), '\n'));
    const int64_t n_lines = int64_t(lines.size());
    if (counts_->per_thread.size() < size_t(omp_get_max_threads()))
      counts_->per_thread.resize(size_t(omp_get_max_threads()));
    int64_t seen = 0;
#pragma omp parallel reduction(+ : seen) if (n_lines >= 1024)
    {
      WordMap& words = counts_->map(omp_get_thread_num());
#pragma omp for schedule(dynamic, 256)
      for (int64_t i = 0; i < n_lines; i++) seen += counts_->count(lines[size_t(i)], words);
    }
    counts_->seen += seen;
    done += int64_t(block.size());
    if (progress) progress(done, total);
    if (eof) break;
  }
}

int64_t BpeTrainer::words_seen() const { return counts_->seen; }

int64_t BpeTrainer::unique_words() const {
  if (counts_->per_thread.size() == 1) return int64_t(counts_->per_thread[0].size());
  return int64_t(counts_->merged().size());
}

namespace {

using Symbol = int32_t;
uint64_t pair_key(Symbol a, Symbol b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
Symbol pair_left(uint64_t k) { return Symbol(k >> 32); }
Symbol pair_right(uint64_t k) { return Symbol(uint32_t(k)); }

struct PairStats {
  int64_t count = 0;
  std::vector<uint32_t> words;  // words that held the pair at some point (a superset)
  int64_t touched_at = -1;      // the merge step that last raised the count
};

// Heap entry: the count when it was pushed; a popped entry whose count is stale is re-pushed.
struct Candidate {
  int64_t count;
  uint64_t pair;
};
// Highest count first; among equal counts the smallest (left, right) pair, as tokenizers.
struct CandidateOrder {
  bool operator()(const Candidate& x, const Candidate& y) const {
    if (x.count != y.count) return x.count < y.count;
    return x.pair > y.pair;
  }
};

}  // namespace

BpeVocabulary BpeTrainer::train(const BpeProgress& progress) const {
  BpeVocabulary v;
  v.special_tokens = options_.special_tokens;
  std::unordered_map<std::string, Symbol> id_of;
  auto add_token = [&](const std::string& t) {
    auto [it, inserted] = id_of.emplace(t, Symbol(v.tokens.size()));
    if (inserted) v.tokens.push_back(t);
    return it->second;
  };
  for (const std::string& s : options_.special_tokens) add_token(s);
  // The byte characters in code point order.
  std::vector<int> bytes(256);
  for (int b = 0; b < 256; b++) bytes[size_t(b)] = b;
  auto code_point = [](int b) {
    size_t pos = 0;
    return unicode::decode_utf8(byte_level::char_of_byte(uint8_t(b)), pos);
  };
  std::sort(bytes.begin(), bytes.end(), [&](int x, int y) { return code_point(x) < code_point(y); });
  Symbol byte_id[256];
  for (int b : bytes) {
    const std::string ch(byte_level::char_of_byte(uint8_t(b)));
    if (id_of.count(ch)) throw Error("BPE trainer: special token \"{}\" is also a byte token", ch);
    byte_id[b] = add_token(ch);
  }

  // The words in byte order (a deterministic numbering), as symbol sequences.
  const WordMap all = counts_->merged();
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(all.size());
  for (const auto& kv : all) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<std::vector<Symbol>> words(sorted.size());
  std::vector<int64_t> freq(sorted.size());
  for (size_t w = 0; w < sorted.size(); w++) {
    for (unsigned char c : sorted[w]->first) words[w].push_back(byte_id[c]);
    freq[w] = sorted[w]->second;
  }

  std::unordered_map<uint64_t, PairStats> pairs;
  for (uint32_t w = 0; w < words.size(); w++) {
    for (size_t i = 0; i + 1 < words[w].size(); i++) {
      PairStats& p = pairs[pair_key(words[w][i], words[w][i + 1])];
      p.count += freq[w];
      if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
    }
  }
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateOrder> heap;
  for (const auto& [k, p] : pairs) heap.push({p.count, k});

  const int64_t wanted = options_.vocab_size - int64_t(v.tokens.size());
  const int64_t min_count = std::max<int64_t>(1, options_.min_frequency);
  std::vector<uint64_t> raised;
  int64_t step = 0;
  while (int64_t(v.tokens.size()) < options_.vocab_size && !heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    auto it = pairs.find(top.pair);
    const int64_t count = it == pairs.end() ? 0 : it->second.count;
    if (count != top.count) {  // stale: the pair's count changed since it was pushed
      if (count > 0) heap.push({count, top.pair});
      continue;
    }
    if (count < min_count) break;

    const Symbol a = pair_left(top.pair), b = pair_right(top.pair);
    const Symbol z = add_token(v.tokens[size_t(a)] + v.tokens[size_t(b)]);
    v.merges.emplace_back(v.tokens[size_t(a)], v.tokens[size_t(b)]);

    auto adjust = [&](Symbol x, Symbol y, int64_t delta, uint32_t w) {
      PairStats& p = pairs[pair_key(x, y)];
      p.count += delta;
      if (delta > 0) {
        if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
        if (p.touched_at != step) {
          p.touched_at = step;
          raised.push_back(pair_key(x, y));
        }
      }
    };
    std::vector<uint32_t> holders = std::move(it->second.words);
    std::sort(holders.begin(), holders.end());
    holders.erase(std::unique(holders.begin(), holders.end()), holders.end());
    raised.clear();
    for (const uint32_t w : holders) {
      std::vector<Symbol>& s = words[w];
      const int64_t c = freq[w];
      // Left to right, non-overlapping; the symbol before an occurrence may be a z just written.
      size_t j = 0;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          if (j > 0) {
            adjust(s[j - 1], a, -c, w);
            adjust(s[j - 1], z, c, w);
          }
          if (i + 2 < s.size()) {
            adjust(b, s[i + 2], -c, w);
            adjust(z, s[i + 2], c, w);
          }
          s[j++] = z;
          i += 2;
        } else {
          s[j++] = s[i++];
        }
      }
      s.resize(j);
    }
    pairs.erase(top.pair);
    for (const uint64_t k : raised) {
      auto p = pairs.find(k);
      if (p != pairs.end() && p->second.count > 0) heap.push({p->second.count, k});
    }
    step++;
    if (progress && (step % 64 == 0)) progress(int64_t(v.tokens.size()) - (options_.vocab_size - wanted), wanted);
  }
  if (progress) progress(wanted, wanted);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Writing tokenizer.json and tokenizer_config.json

namespace {

std::string quoted(const std::string& s) { return nlohmann::json(s).dump(); }

nlohmann::ordered_json added_token_json(int id, const std::string& content) {
  nlohmann::ordered_json t;
  t["id"] = id;
  t["content"] = content;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = true;
  return t;
}

}  // namespace

std::string bpe_tokenizer_json(const BpeVocabulary& v) {
  using J = nlohmann::ordered_json;
  J added = J::array();
  for (size_t i = 0; i < v.special_tokens.size(); i++)
    added.push_back(added_token_json(int(i), v.special_tokens[i]));
  const J pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                 {"use_regex", true}};
  const J post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                  {"use_regex", true}};
  const J dec = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                 {"use_regex", true}};
  // The vocabulary and merges are written by hand: tens of thousands of entries, in id order,
  // one per line (as tokenizers writes them).
  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
  out += "  \"added_tokens\": " + added.dump() + ",\n";
  out += "  \"normalizer\": null,\n";
  out += "  \"pre_tokenizer\": " + pre.dump() + ",\n";
  out += "  \"post_processor\": " + post.dump() + ",\n";
  out += "  \"decoder\": " + dec.dump() + ",\n";
  out += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
         "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
         "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
         "    \"vocab\": {";
  for (size_t i = 0; i < v.tokens.size(); i++)
    out += (i ? ",\n      " : "\n      ") + quoted(v.tokens[i]) + ": " + std::to_string(i);
  out += "\n    },\n    \"merges\": [";
  // "left right": byte-level tokens never hold a space (it is written Ġ), so the one-string form
  // every tokenizers version reads is unambiguous.
  for (size_t i = 0; i < v.merges.size(); i++)
    out += (i ? ",\n      " : "\n      ") + quoted(v.merges[i].first + " " + v.merges[i].second);
  out += "\n    ]\n  }\n}\n";
  return out;
}

std::string bpe_tokenizer_config_json(const BpeVocabulary& v) {
  nlohmann::ordered_json c;
  c["add_bos_token"] = false;
  c["add_prefix_space"] = false;
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  for (size_t i = 0; i < v.special_tokens.size(); i++) {
    nlohmann::ordered_json t = added_token_json(int(i), v.special_tokens[i]);
    t.erase("id");
    decoder[std::to_string(i)] = t;
  }
  c["added_tokens_decoder"] = decoder;
  if (!v.special_tokens.empty()) {
    c["bos_token"] = v.special_tokens[0];
    c["eos_token"] = v.special_tokens[0];
    c["unk_token"] = v.special_tokens[0];
  }
  c["clean_up_tokenization_spaces"] = false;
  c["tokenizer_class"] = "PreTrainedTokenizerFast";
  return c.dump(2) + "\n";
}

void save_bpe_tokenizer(const BpeVocabulary& v, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("{}: cannot create the directory: {}", dir, ec.message());
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    std::ofstream f(path, std::ios::binary);
    f << text;
    f.close();
    if (!f) throw Error("{}: cannot write", path);
  };
  write("tokenizer.json", bpe_tokenizer_json(v));
  write("tokenizer_config.json", bpe_tokenizer_config_json(v));
}

}  // namespace distill
