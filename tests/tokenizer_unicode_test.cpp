// The pre-tokenizers' Unicode classes: our UCD tables (unicode_tables.h, unicode_classes.h)
// against ICU's general categories over every code point, and whole tokenizers against Hugging
// Face's own library (the Rust crate through npm's @anush008/tokenizers, tests/tokenizers/) on
// text that holds every assigned code point, grouped by general category, and every emoji
// sequence of emoji-test.txt (ZWJ sequences, skin tones, flags, keycaps). The expected ids and
// pre-token splits come from the Rust library at test time; the same texts encoded with PCRE2's
// own (older) property tables must differ from it, which shows what the tables change.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unicode/uchar.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/unicode_classes.h"
#include "tokenizer/unicode_tables.h"

namespace distill {
namespace {

namespace fs = std::filesystem;
namespace ut = unicode_tables;

const fs::path kSourceRoot = fs::path(DISTILL_FIXTURES).parent_path().parent_path();
const fs::path kPeerDir = kSourceRoot / "tests" / "tokenizers";
const std::string kTestdata = DISTILL_TESTDATA;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

std::string utf8(char32_t c) {
  std::string s;
  unicode::append_utf8(s, c);
  return s;
}

std::string hex_code_points(std::string_view text) {
  std::string out;
  for (size_t pos = 0; pos < text.size();)
    out += fmt::format("{}U+{:04X}", out.empty() ? "" : " ", uint32_t(unicode::decode_utf8(text, pos)));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Properties: every code point, against ICU (Unicode 15.0 in Debian 12's ICU 72, like the UCD
// the tables come from: an oracle that shares no code or data file with them).

// The code points one-code-point `pattern` matches, found in one pass over all of them.
std::vector<bool> matched_code_points(const std::string& pattern, RegexUnicode unicode) {
  std::string all;
  std::vector<char32_t> at_byte;  // code point starting at each byte offset
  for (char32_t c = 0; c <= 0x10FFFF; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const size_t before = all.size();
    unicode::append_utf8(all, c);
    at_byte.resize(all.size(), 0);
    at_byte[before] = c;
  }
  std::vector<bool> matched(0x110000, false);
  Regex regex(pattern, unicode);
  regex.for_each_match(all, [&](size_t begin, size_t end) {
    for (size_t pos = begin; pos < end;) {
      matched[at_byte[pos]] = true;
      pos += unicode::utf8_length(static_cast<unsigned char>(all[pos]));
    }
  });
  return matched;
}

std::string icu_category(char32_t c) {
  return u_getPropertyValueName(UCHAR_GENERAL_CATEGORY, u_charType(UChar32(c)),
                                U_SHORT_PROPERTY_NAME);
}

struct PropertyCase {
  const char* pattern;
  bool (*expected)(char32_t c);
};

bool is_letter(char32_t c) { return icu_category(c)[0] == 'L'; }
bool is_number(char32_t c) { return icu_category(c)[0] == 'N'; }
bool is_white_space(char32_t c) { return u_hasBinaryProperty(UChar32(c), UCHAR_WHITE_SPACE); }

const PropertyCase kPropertyCases[] = {
    {"\\p{L}", is_letter},
    {"\\pL", is_letter},
    {"\\p{Letter}", is_letter},
    {"\\P{L}", [](char32_t c) { return !is_letter(c); }},
    {"\\p{^L}", [](char32_t c) { return !is_letter(c); }},
    {"[^\\P{L}]", is_letter},
    {"[\\P{L}\\p{N}]", [](char32_t c) { return !is_letter(c) || is_number(c); }},
    {"\\p{Lu}", [](char32_t c) { return icu_category(c) == "Lu"; }},
    {"\\p{Cn}", [](char32_t c) { return icu_category(c) == "Cn"; }},
    {"\\p{So}", [](char32_t c) { return icu_category(c) == "So"; }},
    {"[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]",
     [](char32_t c) {
       const std::string g = icu_category(c);
       return g == "Lu" || g == "Lt" || g == "Lm" || g == "Lo" || g[0] == 'M';
     }},
    {"[^\\r\\n\\p{L}\\p{N}]", [](char32_t c) { return c != '\r' && c != '\n' && !is_letter(c) && !is_number(c); }},
    {"[^\\s\\p{L}\\p{N}]", [](char32_t c) { return !is_white_space(c) && !is_letter(c) && !is_number(c); }},
    {"[\\p{P}\\p{S}]", [](char32_t c) { const char g = icu_category(c)[0]; return g == 'P' || g == 'S'; }},
    {"\\s", is_white_space},
    {"\\S", [](char32_t c) { return !is_white_space(c); }},
    {"\\d", [](char32_t c) { return icu_category(c) == "Nd"; }},
    {"[a-c\\x{1FAF7}\\d]", [](char32_t c) { return (c >= 'a' && c <= 'c') || c == 0x1FAF7 || icu_category(c) == "Nd"; }},
    {"[\\-\\]\\p{Zs}]", [](char32_t c) { return c == '-' || c == ']' || icu_category(c) == "Zs"; }},
};

TEST(UnicodeClasses, EveryCodePointAgreesWithIcu) {
  ASSERT_STREQ(ut::kUcdVersion, U_UNICODE_VERSION ".0") << "the UCD and ICU are different versions";
  for (const PropertyCase& pc : kPropertyCases) {
    SCOPED_TRACE(pc.pattern);
    const std::vector<bool> matched = matched_code_points(pc.pattern, RegexUnicode::kUcd);
    size_t wrong = 0;
    std::string examples;
    for (char32_t c = 0; c <= 0x10FFFF; c++) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;
      if (matched[c] != pc.expected(c) && ++wrong <= 5)
        examples += fmt::format(" U+{:04X}({})", uint32_t(c), icu_category(c));
    }
    EXPECT_EQ(wrong, 0u) << examples;
  }
}

TEST(UnicodeClasses, Pcre2TablesAreOlderThanTheUcd) {
  // What the kPcre2 option exists to show: PCRE2 10.42 has Unicode 14, so a letter of Unicode 15
  // (U+11F04 KAWI LETTER A) and an emoji (U+1FAF7 LEFTWARDS PUSHING HAND) are unassigned to it.
  const std::vector<bool> ucd = matched_code_points("\\p{L}", RegexUnicode::kUcd);
  EXPECT_TRUE(ucd[0x11F04]);
  if (std::string(ut::kPcre2UnicodeVersion) < std::string(ut::kUcdVersion)) {
    const std::vector<bool> pcre2 = matched_code_points("\\p{L}", RegexUnicode::kPcre2);
    EXPECT_FALSE(pcre2[0x11F04]);
    size_t differ = 0;
    for (size_t c = 0; c < ucd.size(); c++) differ += ucd[c] != pcre2[c];
    EXPECT_GT(differ, 4000u);  // Unicode 15.0 added 4,193 CJK ideographs alone
  }
}

TEST(UnicodeClasses, OnigurumaEscapes) {
  // \h is a hex digit in Oniguruma (horizontal space in PCRE2); \w is Alphabetic, marks, Nd, Pc
  // and the Latin-1 superscripts and fractions.
  Regex h("\\h+");
  size_t b = 0, e = 0;
  ASSERT_TRUE(h.find("  \t0fA9g", 0, b, e));
  EXPECT_EQ(b, 3u);
  EXPECT_EQ(e, 7u);
  const std::vector<bool> w = matched_code_points("\\w", RegexUnicode::kUcd);
  EXPECT_TRUE(w['_']);
  EXPECT_TRUE(w[0xB2]);
  EXPECT_TRUE(w[0x0301]);   // combining acute (Mn)
  EXPECT_FALSE(w[0x09F4]);  // Bengali currency numerator (No)
  EXPECT_FALSE(w[0x200D]);  // ZWJ
}

TEST(UnicodeClasses, TranslationLeavesOtherConstructsToPcre2) {
  EXPECT_EQ(translate_regex("'s|'t|[A-Za-z]+|\\x{41}", RegexUnicode::kUcd), "'s|'t|[A-Za-z]+|\\x{41}");
  EXPECT_EQ(translate_regex("[[:alpha:]]", RegexUnicode::kUcd), "[[:alpha:]]");
  EXPECT_EQ(translate_regex("\\p{Han}", RegexUnicode::kUcd), "\\p{Han}");  // no script tables
  EXPECT_EQ(translate_regex("\\\\p{L}", RegexUnicode::kUcd), "\\\\p{L}");  // an escaped backslash
}

TEST(HfNormalization, FollowsUnicode9AsHuggingFaceDoes) {
  std::string out;
  ASSERT_TRUE(unicode::normalize("e\u0301", unicode::NormalForm::NFC, out));
  EXPECT_EQ(out, "\u00e9");
  // U+0899 (ccc 220) before U+0898 (ccc 230) in Unicode 14; HF's tables (9.0) leave the order.
  EXPECT_FALSE(unicode::normalize("a\u0898\u0899", unicode::NormalForm::NFC, out));
  EXPECT_FALSE(unicode::normalize("\u0898\u0899", unicode::NormalForm::NFD, out));
  // A Unicode 9.0 mark still reorders around a later code point's neighbours.
  ASSERT_TRUE(unicode::normalize("a\u0301\u0316\u0898", unicode::NormalForm::NFD, out));
  EXPECT_EQ(out, "a\u0316\u0301\u0898");
}

// ---------------------------------------------------------------------------------------------
// Tokenizers against Hugging Face's Rust library.

struct TokenizerFile {
  std::string name;
  fs::path path;
};

std::vector<TokenizerFile> tokenizer_files() {
  const fs::path lenml = kPeerDir / "node_modules" / "@lenml";
  return {
      {"llama3", lenml / "tokenizer-llama3" / "models" / "tokenizer.json"},
      {"deepseek_v3", lenml / "tokenizer-deepseek_v3" / "models" / "tokenizer.json"},
      {"gemma3", lenml / "tokenizer-gemma3" / "models" / "tokenizer.json"},
      {"gpt_oss", lenml / "tokenizer-gptoss" / "models" / "tokenizer.json"},
      {"qwen3", lenml / "tokenizer-qwen3" / "models" / "tokenizer.json"},
      {"gpt2", fs::path(kTestdata) / "hf-tokenizers" / "gpt2" / "tokenizer.json"},
      {"mistral", fs::path(kTestdata) / "hf-tokenizers" / "mistral-7b-v0.1" / "tokenizer.json"},
  };
}

// What surrounds each code point, in turn, so that every pre-tokenizer boundary is met: letters,
// digits, spaces, punctuation, newlines, contractions, CJK and an emoji on either side.
const char* const kContexts[][2] = {
    {"", ""},   {" ", ""},   {"a", ""},  {"", "a"},   {"A", "b"},   {"1", ""},     {"", "12"},
    {".", ""},  {"", ","},   {"\n", ""}, {"", "\n"},  {"  ", " "},  {"'s", ""},    {"", "'re"},
    {"中", ""}, {"", "中"},  {"😀", ""}, {"", "😀"}, {"\t", "\t"}, {"x", "x "}, {"", ""},
};

struct TestText {
  std::string text;
  std::string kind;  // "category Lu", "emoji"
};

// Every code point the UCD assigns (all but Cn; surrogates cannot be written), 48 to a text, by
// general category, each between contexts; neighbours in a text are of the same category.
std::vector<TestText> full_unicode_texts() {
  static const char* const kNames[] = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl",
                                       "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc",
                                       "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
  std::vector<TestText> texts;
  size_t context = 0;
  for (int category = 0; category < ut::kCategoryCount; category++) {
    if (category == ut::kCs || category == ut::kCn) continue;
    TestText t{"", std::string("category ") + kNames[category]};
    int in_text = 0;
    for (size_t i = 0; i < ut::kGeneralCategorySize; i++) {
      const ut::CategoryRange& r = ut::kGeneralCategory[i];
      if (r.category != category) continue;
      for (char32_t c = r.first; c <= r.last; c++) {
        const auto& ctx = kContexts[context++ % std::size(kContexts)];
        t.text += ctx[0] + utf8(c) + ctx[1];
        if (++in_text == 48) {
          texts.push_back(t);
          t.text.clear();
          in_text = 0;
        }
      }
    }
    if (!t.text.empty()) texts.push_back(t);
  }
  return texts;
}

// Every sequence of emoji-test.txt (fully-, minimally- and unqualified, components), 12 to a text.
std::vector<TestText> emoji_texts() {
  const std::string path = std::string(DISTILL_UCD_DIR) + "/emoji/emoji-test.txt";
  std::istringstream in(read_file(path));
  std::vector<TestText> texts;
  TestText t{"", "emoji"};
  int in_text = 0;
  size_t context = 0;
  for (std::string line; std::getline(in, line);) {
    const size_t semi = line.find(';');
    if (line.empty() || line[0] == '#' || semi == std::string::npos) continue;
    std::istringstream cps(line.substr(0, semi));
    std::string seq;
    for (std::string hex; cps >> hex;) unicode::append_utf8(seq, char32_t(std::stoul(hex, nullptr, 16)));
    const auto& ctx = kContexts[context++ % std::size(kContexts)];
    t.text += ctx[0] + seq + ctx[1];
    if (++in_text == 12) {
      texts.push_back(t);
      t.text.clear();
      in_text = 0;
    }
  }
  if (!t.text.empty()) texts.push_back(t);
  return texts;
}

std::vector<TestText> all_texts() {
  std::vector<TestText> texts = full_unicode_texts();
  for (TestText& t : emoji_texts()) texts.push_back(std::move(t));
  return texts;
}

// Our pre-tokenizer's words of `text`, as [begin, end) code point offsets (as the Rust library
// reports them), or nullopt when the tokenizer has none.
std::optional<std::vector<std::pair<size_t, size_t>>> our_splits(const PreTokenizer* pre,
                                                                 const std::string& text) {
  if (pre == nullptr) return std::nullopt;
  PreTokenized words{text, {{0, uint32_t(text.size())}}};
  pre->apply(words, true);
  std::vector<size_t> char_at(words.text.size() + 1, 0);  // code point offset of each byte
  size_t chars = 0;
  for (size_t pos = 0; pos < words.text.size(); chars++) {
    const size_t len = unicode::utf8_length(static_cast<unsigned char>(words.text[pos]));
    for (size_t k = 0; k < len && pos + k < char_at.size(); k++) char_at[pos + k] = chars;
    pos += len;
  }
  char_at[words.text.size()] = chars;
  std::vector<std::pair<size_t, size_t>> out;
  for (const Span& s : words.spans)
    if (s.end > s.begin) out.emplace_back(char_at[s.begin], char_at[s.end]);
  return out;
}

struct Mismatches {
  size_t ids = 0, splits = 0;        // texts whose ids / pre-token words differ
  size_t emoji_ids = 0, emoji_splits = 0;
  std::string first;                 // the first difference, for the failure message
};

struct PeerResult {
  std::vector<int32_t> ids;
  std::optional<std::vector<std::pair<size_t, size_t>>> splits;
};

Mismatches compare(const TokenizerFile& file, RegexUnicode unicode,
                   const std::vector<TestText>& texts, const std::vector<PeerResult>& hf) {
  const RegexUnicode before = set_default_regex_unicode(unicode);
  const auto tokenizer = load_tokenizer(file.path.string());
  const auto json = nlohmann::json::parse(read_file(file.path));
  bool deferred = false;
  std::unique_ptr<PreTokenizer> pre;
  if (!json["pre_tokenizer"].is_null())
    pre = pre_tokenizer_from_json(json["pre_tokenizer"], file.path.string(), true, &deferred);
  set_default_regex_unicode(before);

  EncodeOptions as_hf;  // tokenizers' encode matches added tokens written in the text
  as_hf.parse_special = true;
  std::vector<std::string_view> views;
  for (const TestText& t : texts) views.push_back(t.text);
  const std::vector<std::vector<int32_t>> ids = tokenizer->encode_batch(views, as_hf);
  Mismatches m;
  for (size_t i = 0; i < texts.size(); i++) {
    const bool emoji = texts[i].kind == "emoji";
    const auto splits = our_splits(pre.get(), texts[i].text);
    if (splits != hf[i].splits) {
      m.splits++;
      m.emoji_splits += emoji;
      if (m.first.empty()) {
        size_t k = 0;
        while (k < splits->size() && k < hf[i].splits->size() && (*splits)[k] == (*hf[i].splits)[k]) k++;
        m.first = fmt::format("{} text {}: pre-token {} differs; text: {}", texts[i].kind, i, k,
                              hex_code_points(texts[i].text));
      }
    }
    if (ids[i] != hf[i].ids) {
      m.ids++;
      m.emoji_ids += emoji;
      if (m.first.empty())
        m.first = fmt::format("{} text {}: ids {} vs HF {}; text: {}", texts[i].kind, i,
                              fmt::join(ids[i], " "), fmt::join(hf[i].ids, " "),
                              hex_code_points(texts[i].text));
    }
  }
  return m;
}

class HuggingFaceUnicode : public testing::TestWithParam<TokenizerFile> {};

TEST_P(HuggingFaceUnicode, IdsAndPreTokensMatchTheRustLibraryOnEveryCodePointAndEmoji) {
  const TokenizerFile& file = GetParam();
  // scripts/test installs the peers (npm ci in tests/tokenizers): without them this test fails,
  // it does not skip, so a run that lost them cannot pass unnoticed.
  ASSERT_EQ(std::system("command -v node > /dev/null 2>&1"), 0) << "node is not installed";
  ASSERT_TRUE(fs::exists(kPeerDir / "node_modules" / "@anush008" / "tokenizers"))
      << "run (cd tests/tokenizers && npm ci --ignore-scripts) or scripts/test";
  ASSERT_TRUE(fs::exists(file.path)) << file.path << " is missing";

  static const std::vector<TestText> texts = all_texts();
  const fs::path dir = fs::temp_directory_path() / ("distill_tokenizer_unicode_" + file.name);
  fs::create_directories(dir);
  std::string jsonl;
  for (const TestText& t : texts) jsonl += nlohmann::json(t.text).dump() + "\n";
  write_file(dir / "texts.jsonl", jsonl);
  const std::string cmd = fmt::format("node {} {} {} > {} 2> {}", (kPeerDir / "hf_peer.mjs").string(),
                                      file.path.string(), (dir / "texts.jsonl").string(),
                                      (dir / "hf.jsonl").string(), (dir / "stderr").string());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(dir / "stderr");
  std::vector<PeerResult> hf;
  std::istringstream lines(read_file(dir / "hf.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    PeerResult r{j["ids"].get<std::vector<int32_t>>(), std::nullopt};
    if (!j["splits"].is_null()) r.splits = j["splits"].get<std::vector<std::pair<size_t, size_t>>>();
    hf.push_back(std::move(r));
  }
  ASSERT_EQ(hf.size(), texts.size());
  fs::remove_all(dir);

  const Mismatches ours = compare(file, RegexUnicode::kUcd, texts, hf);
  const Mismatches pcre2 = compare(file, RegexUnicode::kPcre2, texts, hf);
  size_t emoji = 0;
  for (const TestText& t : texts) emoji += t.kind == "emoji";
  std::printf("%-12s %zu texts (%zu full-Unicode, %zu emoji): texts that differ from HF (ids, "
              "pre-tokens; of them emoji): UCD %s tables %zu, %zu (%zu, %zu); PCRE2's (Unicode %s) "
              "%zu, %zu (%zu, %zu)\n",
              file.name.c_str(), texts.size(), texts.size() - emoji, emoji, ut::kUcdVersion,
              ours.ids, ours.splits, ours.emoji_ids, ours.emoji_splits, ut::kPcre2UnicodeVersion,
              pcre2.ids, pcre2.splits, pcre2.emoji_ids, pcre2.emoji_splits);
  EXPECT_EQ(ours.ids, 0u) << ours.first;
  EXPECT_EQ(ours.splits, 0u) << ours.first;
  // The tables matter wherever a pre-tokenizer regex uses Unicode properties.
  const std::string pre = nlohmann::json::parse(read_file(file.path))["pre_tokenizer"].dump();
  if (pre.find("\\\\p{") != std::string::npos &&
      std::string(ut::kPcre2UnicodeVersion) < ut::kUcdVersion) {
    EXPECT_GT(pcre2.splits, 0u) << "PCRE2's own tables split every text as the UCD's do";
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, HuggingFaceUnicode, testing::ValuesIn(tokenizer_files()),
                         [](const testing::TestParamInfo<TokenizerFile>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace distill
