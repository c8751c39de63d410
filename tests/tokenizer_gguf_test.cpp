// Vocabularies embedded in GGUF files against llama.cpp's tokenizer tests (vocab-only GGUFs with
// .inp/.out pairs): every one of the 46 cases must match exactly. Plus special tokens, BOS,
// decoding, agreement with the tokenizer.json/.model of the same vocabulary, and bad files.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/gguf_vocab.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace distill {
namespace {

using testing::expect_fixture;
using testing::read_inp;
using testing::read_out;
using testing::testdata;

const Tokenizer& gguf(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = load_tokenizer(testdata("llamacpp-vocab/ggml-vocab-" + name + ".gguf"));
  return *t;
}

const std::vector<std::string>& texts() {
  static const auto t = read_inp(testdata("llamacpp-vocab/ggml-vocab-gpt-2.gguf.inp"));
  return t;
}

class GgufFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufFixture, LlamaCppVocabTestsMatchExactly) {
  const std::string name = GetParam();
  const std::string base = testdata("llamacpp-vocab/ggml-vocab-" + name + ".gguf");
  const auto inputs = read_inp(base + ".inp");
  ASSERT_EQ(inputs.size(), 46u);
  EXPECT_EQ(expect_fixture(gguf(name), inputs, read_out(base + ".out"), name + ".gguf"), 46);
}

// Byte-level vocabularies and llama.cpp's SPM both give back the text (user-defined tokens such
// as DeepSeek's "ü" decode as written, as llama.cpp does).
TEST_P(GgufFixture, DecodeInvertsEncode) {
  const Tokenizer& tok = gguf(GetParam());
  for (const std::string& text : texts())
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << GetParam() << ": \"" << text << "\"";
}

TEST_P(GgufFixture, BatchEncodeEqualsOneByOne) {
  const Tokenizer& tok = gguf(GetParam());
  std::vector<std::string_view> views(texts().begin(), texts().end());
  auto batch = tok.encode_batch(views);
  for (size_t i = 0; i < views.size(); i++) EXPECT_EQ(batch[i], tok.encode(views[i]));
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, GgufFixture,
                         ::testing::Values("gpt-2", "llama-spm", "phi-3", "falcon", "starcoder",
                                           "deepseek-llm"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// The same vocabulary read from GGUF, tokenizer.json and .model gives the same ids.
TEST(GgufVocab, AgreesWithTokenizerJsonAndSentencePiece) {
  auto hf_gpt2 = load_tokenizer(testdata("hf-tokenizers/gpt2/tokenizer.json"));
  auto spm_llama = load_tokenizer(testdata("spm/llama2-tokenizer.model"));
  const auto lines = testing::read_lines(testdata("hf-tokenizers/sample-multilingual.txt"));
  for (const auto* list : {&texts(), &lines}) {
    for (const std::string& text : *list) {
      EXPECT_EQ(gguf("gpt-2").encode(text), hf_gpt2->encode(text)) << text;
      EXPECT_EQ(gguf("llama-spm").encode(text), spm_llama->encode(text)) << text;
    }
  }
}

TEST(GgufVocab, KindsSpecialIdsAndBos) {
  EXPECT_EQ(gguf("gpt-2").kind(), "gguf-gpt2");
  EXPECT_EQ(gguf("llama-spm").kind(), "gguf-llama");
  EXPECT_EQ(gguf("gpt-2").vocab_size(), 50257);
  EXPECT_EQ(gguf("deepseek-llm").vocab_size(), 102400);
  EXPECT_EQ(gguf("deepseek-llm").bos_id(), 100000);
  EXPECT_EQ(gguf("deepseek-llm").eos_id(), 100001);
  EXPECT_EQ(gguf("phi-3").eos_id(), 32000);
  EXPECT_TRUE(gguf("phi-3").is_special(32007));   // <|end|>: control
  EXPECT_FALSE(gguf("phi-3").is_special(2));      // </s> is user-defined in this file
  EXPECT_TRUE(gguf("llama-spm").is_special(0));   // <unk>
  EXPECT_EQ(gguf("llama-spm").token_text(15043), "\u2581Hello");
  EXPECT_EQ(gguf("llama-spm").token_id("\u2581Hello"), 15043);

  EncodeOptions add;
  add.add_special_tokens = true;
  // add_bos_token: true for DeepSeek and Llama; GPT-2's file does not ask for BOS.
  EXPECT_EQ(gguf("deepseek-llm").encode("Hello", add)[0], 100000);
  EXPECT_EQ(gguf("llama-spm").encode("Hello", add), (std::vector<int32_t>{1, 15043}));
  EXPECT_EQ(gguf("llama-spm").encode("", add), (std::vector<int32_t>{1}));
  EXPECT_EQ(gguf("gpt-2").encode("Hello", add), (std::vector<int32_t>{15496}));
}

TEST(GgufVocab, ControlTokensAreTextUnlessParsed) {
  EncodeOptions parse;
  parse.parse_special = true;
  const Tokenizer& phi = gguf("phi-3");
  EXPECT_EQ(phi.encode("<|user|>\nHi", parse)[0], 32010);
  for (int32_t id : phi.encode("<|user|>\nHi")) EXPECT_NE(id, 32010);
  // After a special token, llama.cpp's SPM puts a space prefix before the next text again.
  EXPECT_EQ(phi.encode("<|user|>Hi", parse), (std::vector<int32_t>{32010, 6324}));
  // ... so the round trip gains that space, as in llama.cpp and HF's Llama tokenizer.
  EXPECT_EQ(phi.decode(phi.encode("<|user|>Hi", parse)), "<|user|> Hi");
  EXPECT_EQ(phi.decode(phi.encode("<|user|>Hi", parse), /*skip_special=*/true), "Hi");
  const Tokenizer& starcoder = gguf("starcoder");
  EXPECT_EQ(starcoder.encode("<fim_prefix>x", parse)[0], 1);
  EXPECT_NE(starcoder.encode("<fim_prefix>x")[0], 1);
  // DeepSeek's user-defined "ü" (a byte character in its vocabulary) is always one token.
  EXPECT_EQ(gguf("deepseek-llm").encode("\xc3\xbc"), (std::vector<int32_t>{100014}));
}

TEST(GgufVocab, PreTokenizerNames) {
  EXPECT_EQ(gguf_pre_regexes("gpt-2").size(), 1u);
  EXPECT_EQ(gguf_pre_regexes("llama-bpe"), gguf_pre_regexes("llama3"));
  EXPECT_EQ(gguf_pre_regexes("deepseek-llm").size(), 6u);
  try {
    gguf_pre_regexes("no-such-pre");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"no-such-pre\" is not supported (supported: "),
              std::string::npos)
        << e.what();
  }
}

std::string write_vocab(const std::string& name, const std::string& model,
                        const std::string& pre) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("llama"));
  w.set("tokenizer.ggml.model", GgufValue::of_string(model));
  if (!pre.empty()) w.set("tokenizer.ggml.pre", GgufValue::of_string(pre));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings({"a", "b", "ab"}));
  w.set("tokenizer.ggml.merges", GgufValue::of_strings({"a b"}));
  const std::string path = ::testing::TempDir() + "/" + name + ".gguf";
  w.write(path);
  return path;
}

std::string error_of(const std::string& path) {
  try {
    load_tokenizer(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(GgufVocab, WrittenVocabularyRoundTrips) {
  auto tok = load_tokenizer(write_vocab("distill_vocab_ok", "gpt2", "gpt-2"));
  EXPECT_EQ(tok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(tok->decode({2, 1, 0}), "abba");
  EXPECT_NE(tok->fingerprint(), gguf("gpt-2").fingerprint());
  EXPECT_EQ(tok->fingerprint(),
            load_tokenizer(write_vocab("distill_vocab_ok2", "gpt2", "gpt-2"))->fingerprint());
}

TEST(GgufVocab, UnsupportedOrBrokenVocabulariesAreClearErrors) {
  std::string e = error_of(write_vocab("distill_vocab_t5", "t5", ""));
  EXPECT_NE(e.find("tokenizer.ggml.model \"t5\" is not supported (supported: gpt2, llama)"),
            std::string::npos)
      << e;
  e = error_of(write_vocab("distill_vocab_pre", "gpt2", "mystery"));
  EXPECT_NE(e.find("distill_vocab_pre.gguf: tokenizer.ggml.pre \"mystery\" is not supported"),
            std::string::npos)
      << e;
  // A model file without a vocabulary.
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("llama"));
  const std::string bare = ::testing::TempDir() + "/distill_no_vocab.gguf";
  w.write(bare);
  e = error_of(bare);
  EXPECT_NE(e.find("no tokenizer.ggml.model"), std::string::npos) << e;
  // Files the GGUF reader rejects.
  e = error_of(testdata("gguf/llamacpp-2023-07-example.gguf"));
  EXPECT_NE(e.find("llamacpp-2023-07-example.gguf"), std::string::npos) << e;
}

// A real model file (with tensors) carries the Llama 2 vocabulary: same ids as the .model.
TEST(GgufVocab, ModelFileVocabulary) {
  auto tok = load_tokenizer(testdata("gguf/ollama-llama-2-tiny-random.gguf"));
  auto spm_llama = load_tokenizer(testdata("spm/llama2-tokenizer.model"));
  EXPECT_EQ(tok->vocab_size(), 32000);
  for (const std::string& text : texts()) EXPECT_EQ(tok->encode(text), spm_llama->encode(text));
}

}  // namespace
}  // namespace distill
