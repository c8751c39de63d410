// BPE trainer: hand-checked first merges, the tokenizer.json it writes, round trips through our
// loader, the CLI, and — when node and bench/node_modules are there — Hugging Face's own library:
// its BpeTrainer must learn the same merges on the same corpus, and it must load our
// tokenizer.json and give the same ids as our loader.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "test_support.h"

namespace distill {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kTestdata = DISTILL_TESTDATA;
const fs::path kSourceRoot = fs::path(DISTILL_FIXTURES).parent_path().parent_path();

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

fs::path temp_dir(const std::string& name) { return test_support::temp_dir("bpe-trainer-" + name); }

std::vector<std::pair<std::string, std::string>> merges_of(const BpeVocabulary& v, size_t n) {
  return {v.merges.begin(), v.merges.begin() + std::min(n, v.merges.size())};
}

// A deterministic corpus with what trips tokenizers: frequent and rare words, many equal counts
// (ties), capitals, digits, contractions, punctuation runs, several scripts, emoji, tabs, runs
// of spaces, CRLF and empty lines.
std::string synthetic_corpus(size_t lines) {
  static const char* kSyllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "the",
                                     "ing", "er", "qu", "zz", "é", "ß", "中", "文", "ки", "ри",
                                     "λό", "γο", "🙂", "e\xCC\x81"};
  static const char* kGlue[] = {" ", " ", " ", " ", ", ", ". ", "  ", "\t", " -- ", "'s ",
                                "'t ", "'re ", "!? ", " (", ") ", " 42 ", " 3.14 ", " 1999 "};
  uint64_t state = 12345;
  auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  std::string text;
  for (size_t l = 0; l < lines; l++) {
    const size_t words = next(12);
    for (size_t w = 0; w < words; w++) {
      // Zipf-like: short words from the first syllables are much more frequent.
      const size_t syl = 1 + next(3);
      std::string word;
      for (size_t s = 0; s < syl; s++) {
        const size_t r = next(100);
        const size_t n = sizeof kSyllables / sizeof *kSyllables;
        word += kSyllables[r < 60 ? next(6) : r < 90 ? next(12) : next(n)];
      }
      if (next(10) == 0) word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
      text += word;
      text += kGlue[next(sizeof kGlue / sizeof *kGlue)];
    }
    text += next(15) == 0 ? "\r\n" : "\n";
  }
  return text;
}

TEST(BpeTrainer, FirstMergesAreTheHandCountedOnes) {
  // Words: "hug" 1, " hug" 2, " pug" 2, " pun" 1, " bun" 1, " hugs" 1 (a space is written Ġ).
  // Pair counts: u g 6 -> merge; h ug 4 -> merge; then Ġ p 3 ties Ġ hug 3 and wins (p's id is a
  // byte's, below hug's); Ġ hug 3; then u n 2 ties Ġp ug 2 and wins (u < Ġp); Ġp ug 2. Every other
  // pair is seen once, below min_frequency 2.
  BpeTrainerOptions o;
  o.vocab_size = 1000;
  o.special_tokens = {};
  BpeTrainer t(o);
  t.add_text("hug hug hug pug pug pun bun hugs");
  EXPECT_EQ(t.words_seen(), 8);
  EXPECT_EQ(t.unique_words(), 6);
  const BpeVocabulary v = t.train();
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"u", "g"}, {"h", "ug"}, {"Ġ", "p"}, {"Ġ", "hug"}, {"u", "n"}, {"Ġp", "ug"}};
  EXPECT_EQ(v.merges, expected);
  ASSERT_EQ(v.tokens.size(), 256u + 6u);
  EXPECT_EQ(v.tokens[256], "ug");
  EXPECT_EQ(v.tokens[261], "Ġpug");

  // The vocabulary size bounds the merges; lowering min_frequency allows the count-1 pairs.
  o.vocab_size = 256 + 3;
  BpeTrainer small(o);
  small.add_text("hug hug hug pug pug pun bun hugs");
  EXPECT_EQ(small.train().merges, merges_of(v, 3));
  o.vocab_size = 1000;
  o.min_frequency = 1;
  BpeTrainer all(o);
  all.add_text("hug hug hug pug pug pun bun hugs");
  const BpeVocabulary va = all.train();
  EXPECT_GT(va.merges.size(), 6u);
  EXPECT_EQ(merges_of(va, 6), expected);
}

TEST(BpeTrainer, IdsAreSpecialsThenBytesInGpt2OrderThenMerges) {
  BpeTrainerOptions o;
  o.vocab_size = 300;
  o.special_tokens = {"<|endoftext|>", "<|pad|>"};
  BpeTrainer t(o);
  t.add_text("aaaa aaaa");
  const BpeVocabulary v = t.train();
  EXPECT_EQ(v.tokens[0], "<|endoftext|>");
  EXPECT_EQ(v.tokens[1], "<|pad|>");
  // The 256 byte tokens in the order of GPT-2's vocabulary (ids 0..255 there).
  const auto gpt2 = nlohmann::json::parse(read_file(kTestdata + "/hf-tokenizers/gpt2/tokenizer.json"));
  std::vector<std::string> gpt2_bytes(256);
  for (const auto& [token, id] : gpt2["model"]["vocab"].items())
    if (id.get<int>() < 256) gpt2_bytes[id.get<size_t>()] = token;
  ASSERT_GE(v.tokens.size(), 2u + 256u + 1u);
  EXPECT_EQ(std::vector<std::string>(v.tokens.begin() + 2, v.tokens.begin() + 258), gpt2_bytes);
  EXPECT_EQ(v.tokens[2], "!");
  EXPECT_EQ(v.tokens[2 + 188], "Ā");  // byte 0
  EXPECT_EQ(v.tokens[2 + 256], "aa");
}

TEST(BpeTrainer, BadOptionsAndInputAreErrors) {
  BpeTrainerOptions o;
  o.vocab_size = 200;
  EXPECT_THROW(BpeTrainer{o}, Error);
  o.vocab_size = 1000;
  o.special_tokens = {"<s>", "<s>"};
  EXPECT_THROW(BpeTrainer{o}, Error);
  o.special_tokens = {"!"};  // a byte token
  BpeTrainer clash(o);
  EXPECT_THROW(clash.train(), Error);

  o.special_tokens = {};
  BpeTrainer t(o);
  const fs::path dir = temp_dir("bad_utf8");
  write_file(dir / "bad.txt", "fine\nalso fine\nbroken \xC3\x28 here\n");
  try {
    t.add_file((dir / "bad.txt").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bad.txt:3: invalid UTF-8"));
  }
  EXPECT_THROW(t.add_file((dir / "missing.txt").string()), Error);
  fs::remove_all(dir);
}

TEST(BpeTrainer, SameResultForAnyThreadCountAndReadBlockSize) {
  const fs::path dir = temp_dir("threads");
  // A line far longer than the small read blocks, and no newline at the end.
  std::string long_line;
  for (int i = 0; i < 300; i++) long_line += "longline words repeat ";
  const std::string corpus = synthetic_corpus(4000) + long_line + "\n" + synthetic_corpus(50) + "tail";
  write_file(dir / "corpus.txt", corpus);
  BpeTrainerOptions o;
  o.vocab_size = 1500;
  auto train = [&](int threads, size_t block) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    BpeTrainerOptions ob = o;
    ob.read_block_bytes = block;
    BpeTrainer t(ob);
    t.add_file((dir / "corpus.txt").string());
    omp_set_num_threads(saved);
    return std::make_pair(t.train(), t.words_seen());
  };
  const auto [one, seen] = train(1, size_t(8) << 20);
  // add_file counts each line (with its '\n') as a sequence of its own, as add_text of each line.
  BpeTrainer by_lines(o);
  std::istringstream lines(corpus);
  for (std::string line; std::getline(lines, line);) by_lines.add_text(lines.eof() ? line : line + "\n");
  EXPECT_EQ(by_lines.words_seen(), seen);
  EXPECT_EQ(by_lines.train().merges, one.merges);
  EXPECT_EQ(one.tokens.size(), 1500u);
  for (const auto& [threads, block] : {std::pair{2, size_t(1000)}, std::pair{3, size_t(97)},
                                       std::pair{2, size_t(8) << 20}, std::pair{3, size_t(8) << 20}}) {
    SCOPED_TRACE(fmt::format("{} threads, {}-byte blocks", threads, block));
    const auto [other, other_seen] = train(threads, block);
    EXPECT_EQ(other_seen, seen);
    EXPECT_EQ(other.tokens, one.tokens);
    EXPECT_EQ(other.merges, one.merges);
  }
  fs::remove_all(dir);
}

TEST(BpeTrainer, TokenizerJsonIsAHuggingFaceByteLevelBpe) {
  BpeTrainerOptions o;
  o.vocab_size = 270;
  BpeTrainer t(o);
  t.add_text(synthetic_corpus(200));
  const BpeVocabulary v = t.train();
  const auto j = nlohmann::json::parse(bpe_tokenizer_json(v));
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["vocab"].size(), 270u);
  EXPECT_EQ(j["model"]["vocab"]["<|endoftext|>"], 0);
  EXPECT_EQ(j["model"]["vocab"]["!"], 1);
  ASSERT_EQ(j["model"]["merges"].size(), 270u - 257u);
  EXPECT_EQ(j["model"]["merges"][0], v.merges[0].first + " " + v.merges[0].second);
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["pre_tokenizer"]["add_prefix_space"], false);
  EXPECT_EQ(j["pre_tokenizer"]["use_regex"], true);
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  EXPECT_EQ(j["post_processor"]["type"], "ByteLevel");
  ASSERT_EQ(j["added_tokens"].size(), 1u);
  EXPECT_EQ(j["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_EQ(j["added_tokens"][0]["special"], true);
  const auto c = nlohmann::json::parse(bpe_tokenizer_config_json(v));
  EXPECT_EQ(c["eos_token"], "<|endoftext|>");
  EXPECT_EQ(c["added_tokens_decoder"]["0"]["content"], "<|endoftext|>");
}

// The texts the round trips check: the multilingual sample and llama.cpp's tokenizer tests.
std::vector<std::string> check_texts() {
  std::vector<std::string> texts;
  std::istringstream lines(read_file(kTestdata + "/hf-tokenizers/sample-multilingual.txt"));
  for (std::string line; std::getline(lines, line);) texts.push_back(line);
  const std::string inp = read_file(kTestdata + "/hf-tokenizers/ggml-tests.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    texts.push_back(inp.substr(pos, next - pos));
  texts.push_back(synthetic_corpus(30));
  return texts;
}

TEST(BpeTrainer, RoundTripsThroughLoadTokenizer) {
  const fs::path dir = temp_dir("round_trip");
  write_file(dir / "corpus.txt", synthetic_corpus(3000));
  BpeTrainerOptions o;
  o.vocab_size = 2000;
  BpeTrainer t(o);
  t.add_file((dir / "corpus.txt").string());
  const BpeVocabulary v = t.train();
  save_bpe_tokenizer(v, (dir / "out").string());
  const auto tok = load_tokenizer((dir / "out" / "tokenizer.json").string());
  EXPECT_EQ(tok->vocab_size(), int(v.tokens.size()));
  EXPECT_GT(v.tokens.size(), 1500u);  // the corpus has fewer pairs seen twice than 2000 - 257
  EXPECT_EQ(tok->token_text(0), "<|endoftext|>");
  EXPECT_TRUE(tok->is_special(0));
  for (const std::string& text : check_texts()) {
    const std::vector<int32_t> ids = tok->encode(text);
    EXPECT_EQ(tok->decode(ids), text);
    for (int32_t id : ids) EXPECT_GT(id, 0);  // text is text: never the special token
  }
  // A frequent training word is one token; the special token is one id when parsed as special.
  EXPECT_EQ(tok->encode(" the").size(), 1u);
  EncodeOptions special;
  special.parse_special = true;
  EXPECT_EQ(tok->encode("<|endoftext|>", special), std::vector<int32_t>{0});
  fs::remove_all(dir);
}

TEST(BpeTrainer, CommandLineWritesTheSameTokenizer) {
  const fs::path dir = temp_dir("cli");
  write_file(dir / "a.txt", synthetic_corpus(1500));
  write_file(dir / "b.txt", "second file\nwith more lines\n");
  const std::string cmd = fmt::format(
      "{} tokenizer train --files {},{} --vocab-size 800 --min-frequency 2 --special '<|endoftext|>'"
      " --special '<|im_start|>' --out {} > {} 2> {}",
      DISTILL_BINARY, (dir / "a.txt").string(), (dir / "b.txt").string(), (dir / "out").string(),
      (dir / "stdout").string(), (dir / "stderr").string());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(dir / "stderr");
  EXPECT_THAT(read_file(dir / "stderr"), HasSubstr("learned 542 merges"));
  BpeTrainerOptions o;
  o.vocab_size = 800;
  o.special_tokens = {"<|endoftext|>", "<|im_start|>"};
  BpeTrainer t(o);
  t.add_file((dir / "a.txt").string());
  t.add_file((dir / "b.txt").string());
  EXPECT_EQ(read_file(dir / "out" / "tokenizer.json"), bpe_tokenizer_json(t.train()));
  EXPECT_TRUE(fs::exists(dir / "out" / "tokenizer_config.json"));

  write_file(dir / "bad.txt", "\xFF\n");
  const std::string bad = fmt::format("{} tokenizer train --files {} --out {} 2> {}", DISTILL_BINARY,
                                      (dir / "bad.txt").string(), (dir / "out2").string(),
                                      (dir / "stderr").string());
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_THAT(read_file(dir / "stderr"), HasSubstr("error: "));
  EXPECT_THAT(read_file(dir / "stderr"), HasSubstr("bad.txt:1: invalid UTF-8"));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizers (Rust, through npm's @anush008/tokenizers in bench/node_modules)

const fs::path kNodeModules = kSourceRoot / "bench" / "node_modules";

bool have_hf_tokenizers(std::string& why) {
  if (std::system("command -v node > /dev/null 2>&1") != 0) {
    why = "node is not installed";
    return false;
  }
  if (!fs::exists(kNodeModules / "@anush008" / "tokenizers")) {
    why = "bench/node_modules/@anush008/tokenizers is absent (run npm ci in bench/)";
    return false;
  }
  return true;
}

int run_node(const std::string& args, const fs::path& out, const fs::path& err) {
  const std::string cmd = fmt::format("node {} {} {} > {} 2> {}",
                                      (kSourceRoot / "tools" / "hf_tokenizers_check.mjs").string(),
                                      kNodeModules.string(), args, out.string(), err.string());
  return std::system(cmd.c_str());
}

TEST(BpeTrainer, LearnsTheMergesOfHuggingFacesTrainer) {
  std::string why;
  if (!have_hf_tokenizers(why)) GTEST_SKIP() << why;
  const fs::path dir = temp_dir("hf_train");
  write_file(dir / "corpus.txt", synthetic_corpus(2500) + read_file(kTestdata + "/hf-tokenizers/sample-multilingual.txt"));
  ASSERT_EQ(run_node(fmt::format("train {} {}", (dir / "corpus.txt").string(), (dir / "hf.json").string()),
                     dir / "stdout", dir / "stderr"), 0)
      << read_file(dir / "stderr");
  // tokenizers' default BpeTrainer: min_frequency 0, vocab_size 30000 counted over the
  // characters seen (not all 256 bytes), no special tokens; it runs until no pair is left.
  const auto hf = nlohmann::json::parse(read_file(dir / "hf.json"));
  std::vector<std::pair<std::string, std::string>> hf_merges;
  for (const auto& m : hf["model"]["merges"]) {
    if (m.is_array()) {
      hf_merges.emplace_back(m[0], m[1]);
    } else {
      const std::string s = m;
      hf_merges.emplace_back(s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1));
    }
  }
  BpeTrainerOptions o;
  o.vocab_size = 1000000;
  o.min_frequency = 0;
  o.special_tokens = {};
  BpeTrainer t(o);
  t.add_file((dir / "corpus.txt").string());
  const BpeVocabulary v = t.train();
  ASSERT_GT(hf_merges.size(), 1000u);
  const size_t hf_limit = 30000 - hf["model"]["vocab"].size() + hf_merges.size();
  if (hf_merges.size() < hf_limit) {
    EXPECT_EQ(v.merges.size(), hf_merges.size());  // both ran out of pairs
  }
  EXPECT_EQ(merges_of(v, hf_merges.size()), hf_merges);
  fs::remove_all(dir);
}

TEST(BpeTrainer, HuggingFaceLoadsOurTokenizerAndAgreesOnIds) {
  std::string why;
  if (!have_hf_tokenizers(why)) GTEST_SKIP() << why;
  const fs::path dir = temp_dir("hf_load");
  write_file(dir / "corpus.txt", synthetic_corpus(3000));
  BpeTrainerOptions o;
  o.vocab_size = 1200;
  BpeTrainer t(o);
  t.add_file((dir / "corpus.txt").string());
  save_bpe_tokenizer(t.train(), (dir / "out").string());
  const std::vector<std::string> texts = check_texts();
  std::string jsonl;
  for (const std::string& s : texts) jsonl += nlohmann::json(s).dump() + "\n";
  write_file(dir / "texts.jsonl", jsonl);
  ASSERT_EQ(run_node(fmt::format("encode {} {}", (dir / "out" / "tokenizer.json").string(),
                                 (dir / "texts.jsonl").string()),
                     dir / "hf.jsonl", dir / "stderr"), 0)
      << read_file(dir / "stderr");
  const auto ours = load_tokenizer((dir / "out" / "tokenizer.json").string());
  EncodeOptions as_hf;  // tokenizers' encode matches added tokens written in the text
  as_hf.parse_special = true;
  std::istringstream hf(read_file(dir / "hf.jsonl"));
  size_t n = 0;
  for (std::string line; std::getline(hf, line); n++) {
    ASSERT_LT(n, texts.size());
    const auto r = nlohmann::json::parse(line);
    SCOPED_TRACE("text: " + texts[n]);
    EXPECT_EQ(r["ids"].get<std::vector<int32_t>>(), ours->encode(texts[n], as_hf));
    EXPECT_EQ(r["decoded"].get<std::string>(), texts[n]);
  }
  EXPECT_EQ(n, texts.size());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distill
