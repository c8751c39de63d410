// Tokenizers against third-party fixtures (Hugging Face tokenizer.json, SentencePiece .model):
// every expected id list must match exactly. Plus the stages one by one, round trips, special
// token parsing, fingerprints, errors for malformed files, and the `distill tokenizer` CLI.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/decoder.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace distill {
namespace {

using testing::expect_fixture;
using testing::read_inp;
using testing::read_jsonl;
using testing::read_lines;
using testing::read_out;
using testing::testdata;
using json = nlohmann::json;

const Tokenizer& hf(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = load_tokenizer(testdata("hf-tokenizers/" + name + "/tokenizer.json"));
  return *t;
}

const Tokenizer& spm(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = load_tokenizer(testdata("spm/" + name + ".model"));
  return *t;
}

const std::vector<std::string>& ggml_texts() {
  static const auto texts = read_inp(testdata("hf-tokenizers/ggml-tests.inp"));
  return texts;
}

const std::vector<std::string>& multilingual_lines() {
  static const auto lines = read_lines(testdata("hf-tokenizers/sample-multilingual.txt"));
  return lines;
}

// ---------------------------------------------------------------- fixtures: tokenizer.json

class HfFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(HfFixture, GgmlTestsMatchExactly) {
  const std::string name = GetParam();
  ASSERT_EQ(ggml_texts().size(), 46u);
  EXPECT_EQ(expect_fixture(hf(name), ggml_texts(),
                           read_out(testdata("hf-tokenizers/" + name + "/expected/ggml-tests.out")),
                           name + " ggml-tests"),
            46);
}

// The expected ids come from HF's default encode, which recognises added tokens such as
// "<|endoftext|>" in the text (the last line): parse_special on.
TEST_P(HfFixture, MultilingualMatchesExactly) {
  const std::string name = GetParam();
  auto expected =
      read_jsonl(testdata("hf-tokenizers/" + name + "/expected/sample-multilingual.jsonl"));
  EncodeOptions options;
  options.parse_special = true;
  EXPECT_EQ(expect_fixture(hf(name), multilingual_lines(), expected, name + " multilingual",
                           options),
            int(expected.size()));
}

// Byte-level BPE and Mistral's ▁-replacement with byte fallback both give back the exact text.
TEST_P(HfFixture, DecodeInvertsEncode) {
  const Tokenizer& tok = hf(GetParam());
  for (const auto* texts : {&ggml_texts(), &multilingual_lines()})
    for (const std::string& text : *texts)
      EXPECT_EQ(tok.decode(tok.encode(text)), text) << GetParam() << ": \"" << text << "\"";
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, HfFixture,
                         ::testing::Values("gpt2", "qwen3", "mistral-7b-v0.1"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// llama.cpp's qwen2 and gpt-2 vocabulary tests through the matching tokenizer.json (the README:
// the qwen2 ids are those of Qwen's tokenizer.json). llama-bpe (Llama 3) has no tokenizer.json
// in the fixtures, so its .out cannot be checked.
TEST(HfTokenizer, LlamaCppVocabTestsThroughTokenizerJson) {
  const std::string dir = testdata("llamacpp-vocab/");
  EXPECT_EQ(expect_fixture(hf("qwen3"), read_inp(dir + "ggml-vocab-qwen2.gguf.inp"),
                           read_out(dir + "ggml-vocab-qwen2.gguf.out"), "qwen2 via qwen3 json"),
            46);
  EXPECT_EQ(expect_fixture(hf("gpt2"), read_inp(dir + "ggml-vocab-gpt-2.gguf.inp"),
                           read_out(dir + "ggml-vocab-gpt-2.gguf.out"), "gpt-2 via gpt2 json"),
            46);
}

// ---------------------------------------------------------------- fixtures: SentencePiece

class SpmFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(SpmFixture, ExpectedIdsMatchExactly) {
  const std::string name = GetParam();
  const Tokenizer& tok = spm(name);
  EXPECT_EQ(tok.kind(), "sentencepiece");
  EXPECT_EQ(expect_fixture(tok, ggml_texts(),
                           read_out(testdata("spm/expected/" + name + ".ggml-tests.out")),
                           name + " ggml-tests"),
            46);
  auto expected = read_jsonl(testdata("spm/expected/" + name + ".sample-multilingual.jsonl"));
  EXPECT_EQ(expect_fixture(tok, multilingual_lines(), expected, name + " multilingual"),
            int(expected.size()));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, SpmFixture,
                         ::testing::Values("llama2-tokenizer", "albert-30k-clean"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

TEST(SpmTokenizer, SpecialTokensAndDecode) {
  const Tokenizer& tok = spm("llama2-tokenizer");
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_FALSE(tok.is_special(15043));
  EXPECT_EQ(tok.token_text(15043), "\u2581Hello");
  EXPECT_EQ(tok.token_id("\u2581Hello"), 15043);
  EXPECT_FALSE(tok.token_id("no such piece"));
  EncodeOptions with_bos;
  with_bos.add_special_tokens = true;
  EXPECT_EQ(tok.encode("Hello world", with_bos), (std::vector<int32_t>{1, 15043, 3186}));
  // "<s>" is text unless parse_special.
  EXPECT_NE(tok.encode("<s>")[0], 1);
  EncodeOptions parse;
  parse.parse_special = true;
  EXPECT_EQ(tok.encode("<s>Hello", parse)[0], 1);
  EXPECT_EQ(tok.decode({1, 15043, 3186}, /*skip_special=*/true), "Hello world");
  EXPECT_EQ(tok.decode({15043, 3186, 2}, false), "Hello world</s>");
  for (const std::string& text : ggml_texts()) {
    if (text.find("  ") == std::string::npos && (text.empty() || text[0] != ' ')) {
      EXPECT_EQ(tok.decode(tok.encode(text)), text);
    }
  }
  EXPECT_THROW(tok.decode({32000}), Error);
}

// ---------------------------------------------------------------- special tokens, templates

TEST(HfTokenizer, SpecialTokensAreTextUnlessParsed) {
  EncodeOptions parse;
  parse.parse_special = true;
  const Tokenizer& gpt2 = hf("gpt2");
  EXPECT_EQ(gpt2.encode("<|endoftext|>"),
            (std::vector<int32_t>{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(gpt2.encode("<|endoftext|>", parse), (std::vector<int32_t>{50256}));
  EXPECT_EQ(gpt2.encode("a<|endoftext|>b", parse), (std::vector<int32_t>{64, 50256, 65}));

  const Tokenizer& qwen = hf("qwen3");
  std::vector<int32_t> plain = qwen.encode("<|im_start|>user");
  EXPECT_GT(plain.size(), 2u);
  for (int32_t id : plain) EXPECT_NE(id, 151644);
  std::vector<int32_t> parsed = qwen.encode("<|im_start|>user", parse);
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0], 151644);
  // Non-special added tokens (Qwen's <think>) are one id either way, as in HF.
  EXPECT_EQ(qwen.encode("<think>")[0], 151667);
  EXPECT_EQ(qwen.encode("<think>", parse)[0], 151667);
  EXPECT_TRUE(qwen.is_special(151644));
  EXPECT_FALSE(qwen.is_special(151667));
  EXPECT_EQ(qwen.decode(parsed), "<|im_start|>user");
  EXPECT_EQ(qwen.decode(parsed, /*skip_special=*/true), "user");

  const Tokenizer& mistral = hf("mistral-7b-v0.1");
  EXPECT_EQ(mistral.encode("<s>", parse), (std::vector<int32_t>{1}));
  EXPECT_NE(mistral.encode("<s>"), (std::vector<int32_t>{1}));
}

TEST(HfTokenizer, AddSpecialTokensFollowsThePostProcessor) {
  EncodeOptions add;
  add.add_special_tokens = true;
  // Mistral's TemplateProcessing puts <s> first; GPT-2's and Qwen's ByteLevel add nothing.
  EXPECT_EQ(hf("mistral-7b-v0.1").encode("Hello", add),
            (std::vector<int32_t>{1, 22557}));
  EXPECT_EQ(hf("gpt2").encode("Hello", add), (std::vector<int32_t>{15496}));
  EXPECT_EQ(hf("qwen3").encode("Hello", add), (std::vector<int32_t>{9707}));
  EXPECT_EQ(hf("mistral-7b-v0.1").encode("", add), (std::vector<int32_t>{1}));
  // BOS/EOS from tokenizer_config.json.
  EXPECT_EQ(hf("gpt2").bos_id(), 50256);
  EXPECT_EQ(hf("gpt2").eos_id(), 50256);
  EXPECT_EQ(hf("mistral-7b-v0.1").bos_id(), 1);
  EXPECT_EQ(hf("mistral-7b-v0.1").eos_id(), 2);
  EXPECT_FALSE(hf("qwen3").bos_id());
  EXPECT_EQ(hf("qwen3").eos_id(), 151645);
}

TEST(HfTokenizer, VocabularyAccessors) {
  const Tokenizer& gpt2 = hf("gpt2");
  EXPECT_EQ(gpt2.kind(), "hf-bpe");
  EXPECT_EQ(gpt2.vocab_size(), 50257);
  EXPECT_EQ(gpt2.token_text(262), "\u0120the");
  EXPECT_EQ(gpt2.token_id("\u0120the"), 262);
  EXPECT_EQ(gpt2.token_text(50256), "<|endoftext|>");
  EXPECT_THROW(gpt2.token_text(50257), Error);
  EXPECT_THROW(gpt2.token_text(-1), Error);
  EXPECT_EQ(hf("qwen3").vocab_size(), 151669);
  EXPECT_THROW(gpt2.decode({50257}), Error);
  // Ids that split a character decode to the raw bytes, not U+FFFD.
  const std::string check_mark = "\xe2\x9c\x85";  // ✅: more than one byte-level token
  std::vector<int32_t> ids = gpt2.encode(check_mark);
  ASSERT_GT(ids.size(), 1u);
  std::string joined;
  for (int32_t id : ids) joined += gpt2.decode({id});
  EXPECT_EQ(joined, check_mark);
  EXPECT_LT(gpt2.decode({ids[0]}).size(), check_mark.size());
}

TEST(HfTokenizer, InvalidUtf8IsAnError) {
  try {
    hf("gpt2").encode("ok \xff bad");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (byte 3"), std::string::npos)
        << e.what();
  }
}

TEST(HfTokenizer, BatchEncodeEqualsOneByOne) {
  std::vector<std::string_view> texts;
  for (const std::string& t : ggml_texts()) texts.push_back(t);
  for (const std::string& t : multilingual_lines()) texts.push_back(t);
  for (const char* name : {"gpt2", "qwen3", "mistral-7b-v0.1"}) {
    auto batch = hf(name).encode_batch(texts);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); i++) EXPECT_EQ(batch[i], hf(name).encode(texts[i]));
  }
}

// ---------------------------------------------------------------- fingerprints

TEST(Fingerprint, Sha256KnownAnswers) {
  auto sha = [](const std::string& s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return Sha256::hex(h.digest());
  };
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Fuzz finding: a model whose third piece is empty made SentencePiece's trie builder throw a
// foreign exception out of the loader (std::terminate). It must be a clear distill::Error.
TEST(SpmTokenizer, EmptyPieceIsAClearError) {
  const unsigned char bytes[] = {
      0x0a, 0x0e, 0x0a, 0x05, 0x3c, 0x75, 0x6e, 0x6b, 0x3e, 0x15, 0x00, 0x00, 0x00, 0x00,
      0x18, 0x02, 0x0a, 0x0c, 0x0a, 0x03, 0x3c, 0x73, 0x3e, 0x15, 0x00, 0x00, 0x00, 0x00,
      0x18, 0x04, 0x15, 0x00, 0x00, 0x00, 0x00, 0x18, 0x06, 0x0a, 0x0f, 0x0a, 0x06, 0x00,
      0x00, 0x00, 0x36, 0x32, 0x3e, 0x15, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00};
  const auto path = std::filesystem::temp_directory_path() / "distill-empty-piece.model";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes), sizeof bytes);
  }
  try {
    load_tokenizer(path.string());
    ADD_FAILURE() << "loaded a model with an empty piece";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(Fingerprint, StableAndDistinct) {
  const std::string gpt2 = hf("gpt2").fingerprint();
  EXPECT_EQ(gpt2.size(), 64u);
  EXPECT_EQ(load_tokenizer(testdata("hf-tokenizers/gpt2"))->fingerprint(), gpt2);
  EXPECT_NE(hf("qwen3").fingerprint(), gpt2);
  EXPECT_NE(hf("mistral-7b-v0.1").fingerprint(), hf("qwen3").fingerprint());
  EXPECT_NE(spm("llama2-tokenizer").fingerprint(), spm("albert-30k-clean").fingerprint());
  EXPECT_EQ(load_tokenizer(testdata("spm/llama2-tokenizer.model"))->fingerprint(),
            spm("llama2-tokenizer").fingerprint());
  // One merge less is a different tokenizer.
  json j = json::parse(read_file_text(testdata("hf-tokenizers/gpt2/tokenizer.json")));
  j["model"]["merges"].erase(j["model"]["merges"].end() - 1);
  EXPECT_NE(hf_tokenizer_from_json(j.dump(), "edited", nullptr)->fingerprint(), gpt2);
}

// ---------------------------------------------------------------- stages one by one

std::vector<std::string> pre_tokenize(const json& config, const std::string& text,
                                      bool at_start = true) {
  auto pre = pre_tokenizer_from_json(config, "/pre_tokenizer", false, nullptr);
  PreTokenized words;
  words.text = text;
  words.spans = {{0, uint32_t(text.size())}};
  pre->apply(words, at_start);
  std::vector<std::string> out;
  for (const Span& s : words.spans) out.push_back(words.text.substr(s.begin, s.end - s.begin));
  return out;
}

using Words = std::vector<std::string>;

TEST(PreTokenizer, SplitBehaviours) {
  auto split = [](const char* behavior, bool invert = false) {
    return json{{"type", "Split"},
                {"pattern", {{"String", "-"}}},
                {"behavior", behavior},
                {"invert", invert}};
  };
  EXPECT_EQ(pre_tokenize(split("Removed"), "a-b--c"), (Words{"a", "b", "c"}));
  EXPECT_EQ(pre_tokenize(split("Isolated"), "a-b--c"), (Words{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split("MergedWithPrevious"), "a-b--c"), (Words{"a-", "b-", "-", "c"}));
  EXPECT_EQ(pre_tokenize(split("MergedWithNext"), "a-b--c"), (Words{"a", "-b", "-", "-c"}));
  EXPECT_EQ(pre_tokenize(split("Contiguous"), "a-b--c"), (Words{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(pre_tokenize(split("Removed", true), "a-b--c"), (Words{"-", "-", "-"}));
  json regex{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}+"}}}, {"behavior", "Isolated"}};
  EXPECT_EQ(pre_tokenize(regex, "ab12cd٣4"), (Words{"ab", "12", "cd", "٣4"}));
}

TEST(PreTokenizer, ByteLevelRegexAndPrefixSpace) {
  json byte_level{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokenize(byte_level, "Hi  you're\n"),
            (Words{"\u0120Hi", "\u0120", "\u0120you", "'re", "\u010a"}));
  // Oniguruma's \s includes U+0085 (NEL); PCRE2 10.42's does not: the pattern is rewritten.
  json space{{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Removed"}};
  EXPECT_EQ(pre_tokenize(space, "a\xc2\x85" "b\xe3\x80\x80" "c"), (Words{"a", "b", "c"}));
  json non_space{{"type", "Split"}, {"pattern", {{"Regex", "\\S+"}}}, {"behavior", "Removed"}};
  EXPECT_EQ(pre_tokenize(non_space, "a\xc2\x85" "b"), (Words{"\xc2\x85"}));
}

TEST(PreTokenizer, MetaspacePrependSchemes) {
  auto meta = [](const char* scheme) {
    return json{{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", scheme},
                {"split", true}};
  };
  EXPECT_EQ(pre_tokenize(meta("always"), "Hey  you"),
            (Words{"\u2581Hey", "\u2581", "\u2581you"}));
  EXPECT_EQ(pre_tokenize(meta("never"), "Hey you"), (Words{"Hey", "\u2581you"}));
  EXPECT_EQ(pre_tokenize(meta("first"), "Hey you"), (Words{"\u2581Hey", "\u2581you"}));
  EXPECT_EQ(pre_tokenize(meta("first"), "Hey you", /*at_start=*/false),
            (Words{"Hey", "\u2581you"}));
}

TEST(PreTokenizer, DigitsPunctuationWhitespace) {
  EXPECT_EQ(pre_tokenize(json{{"type", "Digits"}, {"individual_digits", true}}, "a123"),
            (Words{"a", "1", "2", "3"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "Digits"}, {"individual_digits", false}}, "a123b4"),
            (Words{"a", "123", "b", "4"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "Punctuation"}}, "hi!?"), (Words{"hi", "!", "?"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "Punctuation"}, {"behavior", "Contiguous"}}, "hi!?"),
            (Words{"hi", "!?"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "WhitespaceSplit"}}, " a\tb\u3000c "),
            (Words{"a", "b", "c"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "Whitespace"}}, "Hey, you!"),
            (Words{"Hey", ",", "you", "!"}));
  EXPECT_EQ(pre_tokenize(json{{"type", "BertPreTokenizer"}}, "Hey, you!!"),
            (Words{"Hey", ",", "you", "!", "!"}));
}

std::string normalized(const json& config, std::string text) {
  normalizer_from_json(config, "/normalizer")->normalize(text);
  return text;
}

TEST(Normalizer, UnicodeFormsCaseAndEdits) {
  const std::string e_acute_decomposed = "e\xcc\x81";  // e + combining acute
  EXPECT_EQ(normalized(json{{"type", "NFC"}}, e_acute_decomposed), "\xc3\xa9");
  EXPECT_EQ(normalized(json{{"type", "NFD"}}, "\xc3\xa9"), e_acute_decomposed);
  EXPECT_EQ(normalized(json{{"type", "NFKC"}}, "\xef\xac\x81"), "fi");  // ligature ﬁ
  EXPECT_EQ(normalized(json{{"type", "NFKD"}}, "\xc2\xbd"), "1\xe2\x81\x84" "2");
  EXPECT_EQ(normalized(json{{"type", "Lowercase"}}, "HeLLo \xce\x9f\xce\xa3"),
            "hello \xce\xbf\xcf\x82");  // ΟΣ -> ος: final sigma
  EXPECT_EQ(normalized(json{{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}},
                       " \t a b "),
            "a b ");
  EXPECT_EQ(normalized(json{{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", "_"}},
                       "a  b c"),
            "a_b_c");
  EXPECT_EQ(normalized(json{{"type", "Prepend"}, {"prepend", "\u2581"}}, "x"), "\u2581x");
  EXPECT_EQ(normalized(json{{"type", "Prepend"}, {"prepend", "\u2581"}}, ""), "");
  EXPECT_EQ(normalized(json{{"type", "Sequence"},
                            {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}}}},
                       "caf\xc3\xa9"),
            "cafe");
}

TEST(Decoder, StagesAsHuggingFace) {
  auto decode = [](const json& config, std::vector<std::string> tokens) {
    decoder_from_json(config, "/decoder")->decode_chain(tokens);
    std::string s;
    for (const auto& t : tokens) s += t;
    return s;
  };
  json mistral = json::parse(read_file_text(testdata(
      "hf-tokenizers/mistral-7b-v0.1/tokenizer.json")))["decoder"];
  EXPECT_EQ(decode(mistral, {"\u2581Hello", "<0xE2>", "<0x9C>", "<0x85>", "\u2581you"}),
            "Hello\xe2\x9c\x85 you");
  json meta{{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "always"}};
  EXPECT_EQ(decode(meta, {"\u2581Hey", "\u2581you"}), "Hey you");
  EXPECT_EQ(decode(json{{"type", "ByteLevel"}}, {"\u0120Hi", "\u010a", "<|x|>"}), " Hi\n<|x|>");
  EXPECT_EQ(decode(json{{"type", "BPEDecoder"}, {"suffix", "</w>"}}, {"hi</w>", "you</w>"}),
            "hi you");
  EXPECT_EQ(byte_level::encode(std::string("\x00 \xff", 3)), "\u0100\u0120\u00ff");
}

// The heap merge (long words) and the rescanning merge (short words) agree, on GPT-2's merges.
TEST(Bpe, HeapAndScanMergesAgree) {
  json j = json::parse(read_file_text(testdata("hf-tokenizers/gpt2/tokenizer.json")));
  std::vector<std::pair<std::string, int32_t>> vocab;
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it)
    vocab.emplace_back(it.key(), it.value().get<int32_t>());
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    merges.emplace_back(s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1));
  }
  BpeConfig config;
  config.byte_level = true;
  BpeModel scan(vocab, merges, config, "gpt2"), heap(vocab, merges, config, "gpt2");
  scan.set_heap_threshold(1u << 30);
  heap.set_heap_threshold(0);
  std::mt19937 rng(7);
  const std::string alphabet = "aaabcdeeefghiiijklmnooopqrstuuvwxyz  ";
  for (int trial = 0; trial < 300; trial++) {
    std::string word;
    const int len = 1 + int(rng() % 300);
    for (int i = 0; i < len; i++) word += alphabet[rng() % alphabet.size()];
    std::vector<int32_t> a, b;
    scan.encode_word(word, a);
    heap.encode_word(word, b);
    ASSERT_EQ(a, b) << word;
  }
}

// ---------------------------------------------------------------- malformed input

std::string load_error(const std::string& json_text) {
  try {
    hf_tokenizer_from_json(json_text, "bad/tokenizer.json", nullptr);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "message: " << message;
}

TEST(HfTokenizer, MalformedFilesGiveClearErrors) {
  const std::string bpe_model =
      R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  expect_contains(load_error("{ \"model\": "), "bad/tokenizer.json: not valid JSON");
  expect_contains(load_error(R"({"model": {"vocab": {"a": 9e99999}}})"),
                  "bad/tokenizer.json: not valid JSON");  // a number nlohmann cannot hold
  expect_contains(load_error("[]"), "bad/tokenizer.json: /: expected an object");
  expect_contains(load_error("{}"), "bad/tokenizer.json: /: missing field \"model\"");
  expect_contains(load_error(R"({"model": {"type": "WordPiece", "vocab": {}}})"),
                  "/model/type: model type \"WordPiece\" is not supported (supported: BPE");
  expect_contains(load_error(R"({"model": {"type": "Unigram", "vocab": []}})"),
                  "model type \"Unigram\" is not supported");
  expect_contains(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})"),
                  "/model/merges/0: merge \"a c\" uses \"c\", which is not in the vocabulary");
  expect_contains(load_error(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})"),
                  "/model/vocab/a: expected a non-negative integer id");
  expect_contains(load_error(R"({"model": {"type": "BPE", "vocab": {}, "merges": [7]}})"),
                  "/model/merges/0: expected \"left right\"");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                                 {"type": "ByteLevel"}, {"type": "UnicodeScripts"}]}})"),
                  "/pre_tokenizer/pretokenizers/1: pre-tokenizer type \"UnicodeScripts\" is not "
                  "supported");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
                                 "behavior": "Isolated"}})"),
                  "does not compile");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"},
                                 "behavior": "Sideways"}})"),
                  "/pre_tokenizer/behavior: expected one of Removed, Isolated");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "normalizer": {"type": "Precompiled"}})"),
                  "/normalizer: normalizer type \"Precompiled\" is not supported");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "added_tokens": [{"content": "x"}]})"),
                  "/added_tokens/0: missing field \"id\"");
  // Sizes and ids that would allocate or recurse without bound.
  expect_contains(load_error(R"({"model": {"type": "BPE", "vocab": {"a": 2000000000},
                                 "merges": []}})"),
                  "token \"a\" has id 2000000000 (expected 0..16777215)");
  std::string deep = R"({"type": "NFC"})";
  for (int i = 0; i < 100; i++)
    deep = R"({"type": "Sequence", "normalizers": [)" + deep + "]}";
  expect_contains(load_error(R"({"model": )" + bpe_model + R"(, "normalizer": )" + deep + "}"),
                  "nested more than 64 levels deep");
  expect_contains(load_error(R"({"model": )" + bpe_model +
                             R"(, "post_processor": {"type": "RobertaProcessing",
                                 "cls": ["<s>", 7], "sep": ["</s>", 1]}})"),
                  "the post-processor adds id 7, outside the vocabulary [0, 3)");
  // A well-formed minimal file works.
  auto tok = hf_tokenizer_from_json(R"({"model": )" + bpe_model + "}", "ok", nullptr);
  EXPECT_EQ(tok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
}

TEST(LoadTokenizer, PathErrorsNameThePath) {
  auto error_of = [](const std::string& path) -> std::string {
    try {
      load_tokenizer(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  expect_contains(error_of("/nonexistent/tokenizer.json"), "/nonexistent/tokenizer.json: no such");
  expect_contains(error_of(testdata("safetensors")), "neither tokenizer.json nor tokenizer.model");
  expect_contains(error_of(testdata("README.md")), "not a tokenizer file");
  const std::string bad_model = ::testing::TempDir() + "/distill_bad.model";
  std::ofstream(bad_model) << "not a protobuf";
  expect_contains(error_of(bad_model), "distill_bad.model: not a SentencePiece model");
}

// ---------------------------------------------------------------- CLI

std::string run(const std::string& command, int* status = nullptr) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  int rc = pclose(pipe);
  if (status) *status = WEXITSTATUS(rc);
  return output;
}

TEST(Cli, EncodeLinesPrintsTheFixtureFormat) {
  for (const char* name : {"gpt2", "qwen3", "mistral-7b-v0.1"}) {
    const std::string dir = testdata(std::string("hf-tokenizers/") + name);
    int status = -1;
    std::string out = run(std::string(DISTILL_BINARY) + " tokenizer encode --tokenizer " + dir +
                              "/tokenizer.json --parse-special --lines " +
                              testdata("hf-tokenizers/sample-multilingual.txt"),
                          &status);
    EXPECT_EQ(status, 0);
    EXPECT_EQ(out, read_file_text(dir + "/expected/sample-multilingual.jsonl")) << name;
  }
}

TEST(Cli, EncodeTextAndDecodeIds) {
  const std::string bin = DISTILL_BINARY;
  const std::string tok = " --tokenizer " + testdata("hf-tokenizers/mistral-7b-v0.1");
  EXPECT_EQ(run(bin + " tokenizer encode" + tok + " --text 'Hello world' --add-special"),
            "[1,22557,1526]\n");
  // As HF: the Strip decoder removes the leading space only when the text starts with it.
  EXPECT_EQ(run(bin + " tokenizer decode" + tok + " --ids 1,22557,1526"), "<s> Hello world\n");
  EXPECT_EQ(run(bin + " tokenizer decode" + tok + " --ids '22557, 1526' --skip-special"),
            "Hello world\n");
  int status = 0;
  std::string err = run(bin + " tokenizer decode" + tok + " --ids 1,x", &status);
  EXPECT_NE(status, 0);
  expect_contains(err, "error: --ids: \"x\" is not a token id");
  err = run(bin + " tokenizer encode --tokenizer /nonexistent.json --text hi", &status);
  EXPECT_NE(status, 0);
  expect_contains(err, "error: /nonexistent.json: no such file");
  err = run(bin + " tokenizer encode" + tok, &status);
  EXPECT_NE(status, 0);
  expect_contains(err, "give one of --text and --lines");
  EXPECT_EQ(run(bin + " tokenizer encode" + tok + " --text ''"), "[]\n");
}

TEST(Cli, InfoAndBench) {
  const std::string bin = DISTILL_BINARY;
  const std::string path = testdata("hf-tokenizers/gpt2/tokenizer.json");
  json info = json::parse(run(bin + " tokenizer info --tokenizer " + path));
  EXPECT_EQ(info["kind"], "hf-bpe");
  EXPECT_EQ(info["vocab_size"], 50257);
  EXPECT_EQ(info["bos_id"], 50256);
  EXPECT_EQ(info["fingerprint"], hf("gpt2").fingerprint());
  json bench = json::parse(run(bin + " --threads 1 tokenizer bench --seconds 0 --tokenizer " +
                               path + " --file " +
                               testdata("hf-tokenizers/sample-multilingual.txt")));
  EXPECT_EQ(bench["lines"], 12);
  EXPECT_EQ(bench["threads"], 1);
  size_t tokens = 0;
  for (const std::string& line : multilingual_lines()) tokens += hf("gpt2").encode(line).size();
  EXPECT_EQ(bench["tokens"], tokens);
  EXPECT_GT(bench["mb_per_s"].get<double>(), 0.0);
}

}  // namespace
}  // namespace distill
