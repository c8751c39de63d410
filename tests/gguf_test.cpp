// GGUF: reader validation (third-party fixtures and hand-made corrupt files), writer round trips,
// ggml (de)quantization, the embedded vocabularies, and model export/import round trips.
// Third-party fixtures: tests/data/gguf, hf-tokenizers, spm (see tests/data/README.md). Agreement
// with a real llama.cpp is tests/interop_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include <unistd.h>

#include <sentencepiece_processor.h>

#include "core/error.h"
#include "core/file.h"
#include "formats/dtype.h"
#include "formats/ggml_quant.h"
#include "formats/gguf.h"
#include "formats/gguf_export.h"
#include "formats/gguf_export_vocab.h"
#include "formats/gguf_import.h"
#include "formats/gguf_import_vocab.h"
#include "formats/model_dir.h"

namespace fs = std::filesystem;
using namespace distill;
using ::testing::HasSubstr;

namespace {

const std::string kGguf = std::string(DISTILL_TESTDATA) + "/gguf/";
const std::string kHf = std::string(DISTILL_TESTDATA) + "/hf-tokenizers/";
const std::string kSpm = std::string(DISTILL_TESTDATA) + "/spm/";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("distill-gguf-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

// Little-endian GGUF bytes by hand, for corrupt files.
struct Bytes {
  std::string b;
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
  Bytes& raw(const void* p, size_t n) {
    b.append(static_cast<const char*>(p), n);
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b += "GGUF";
    return u32(version).u64(n_tensors).u64(n_kv);
  }
};

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

ModelConfig small_config(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.max_position = 64;
  if (type == "gpt2") {
    c.arch = Arch::Gpt2;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    return c;
  }
  c.arch = Arch::Llama;
  c.num_kv_heads = 2;
  c.tie_word_embeddings = false;
  c.rope_theta = 10000.0f;
  if (type == "qwen2") c.qkv_bias = true;
  if (type == "qwen3") {
    c.qk_norm = true;
    c.head_dim = 32;  // != hidden/heads: key_length/value_length
    c.tie_word_embeddings = true;
  }
  return c;
}

std::unique_ptr<Model> random_model(const ModelConfig& c, uint64_t seed) {
  auto m = std::make_unique<Model>(c);
  m->init_weights(seed);
  // Norm weights and biases off their init values, so a wrong mapping cannot hide.
  std::mt19937 rng(uint32_t(seed) + 7);
  std::normal_distribution<float> n(0.0f, 0.1f);
  for (const ParamSpec& s : m->param_specs())
    if (s.shape.size() == 1)
      for (size_t i = 0; i < s.numel; i++) m->params()[s.offset + i] += n(rng);
  return m;
}

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids) {
  const float* l = m.forward(ids.data(), 1, int(ids.size()));
  return std::vector<float>(l, l + ids.size() * size_t(m.config().vocab_size));
}

// ---- reader: third-party fixtures ----

TEST(GgufReader, ReadsOllamaTinyLlama) {
  const GgufFile f = GgufFile::open(kGguf + "ollama-llama-2-tiny-random.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 18u);
  EXPECT_EQ(f.metadata()[0].first, "general.architecture");
  EXPECT_EQ(f.get("general.architecture").as_string("a"), "llama");
  EXPECT_EQ(f.get("llama.embedding_length").as_int("e"), 8);
  EXPECT_EQ(f.get("llama.attention.head_count").type, GgufType::UINT32);
  EXPECT_NEAR(f.get("llama.attention.layer_norm_rms_epsilon").as_float("e"), 1e-5, 1e-12);
  const auto tokens = f.get("tokenizer.ggml.tokens").as_strings("t");
  ASSERT_EQ(tokens.size(), 32000u);
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[13], "<0x0A>");
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").as_ints("t")[13], 6);
  EXPECT_EQ(f.get("tokenizer.ggml.scores").as_floats("s").size(), 32000u);
  ASSERT_EQ(f.tensors().size(), 12u);
  const GgufTensorInfo* e = f.find_tensor("token_embd.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dims, (std::vector<int64_t>{8, 32000}));
  EXPECT_EQ(e->type, GgmlType::F16);
  EXPECT_EQ(e->nbytes, 8u * 32000 * 2);
  const std::vector<float> w = f.read_f32(*e);
  for (float x : w) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(f.find_tensor("output_norm.weight")->type, GgmlType::F32);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  EXPECT_THAT(error_of([&] { f.get("nope"); }), HasSubstr("metadata key 'nope' is missing"));
  EXPECT_THAT(error_of([&] { f.get("general.name").as_int("general.name"); }),
              HasSubstr("metadata 'general.name' is string, expected an integer"));
}

TEST(GgufReader, RejectsTheMalformedFixturesClearly) {
  EXPECT_THAT(error_of([] { GgufFile::open(kGguf + "llamacpp-2023-07-example.gguf"); }),
              HasSubstr("not a GGUF file: magic is 'FUGG', expected 'GGUF'"));
  EXPECT_THAT(error_of([] { GgufFile::open(kGguf + "llamacpp-test_writer.gguf"); }),
              HasSubstr("metadata 'dict1': unknown value type 13 (valid types are 0-12)"));
  EXPECT_THAT(error_of([] { GgufFile::open(kGguf + "missing.gguf"); }), HasSubstr("missing.gguf"));
}

// ---- reader: corrupt files made by hand ----

TEST_F(GgufTest, RejectsCorruptHeadersWithoutCrashingOrHugeAllocations) {
  auto check = [&](const std::string& bytes, const std::string& expected) {
    write_raw(path("bad.gguf"), bytes);
    EXPECT_THAT(error_of([&] { GgufFile::open(path("bad.gguf")); }), HasSubstr(expected))
        << "for: " << expected;
  };
  check("", "too short for the magic");
  check(Bytes().header(0, 0, 1).b, "GGUF version 1 is not supported");
  check(Bytes().header(0, 0, 4).b, "GGUF version 4 is not supported; supported versions: 2, 3");
  check(Bytes().header(0, 0, 0x03000000).b, "big-endian GGUF is not supported");
  check(Bytes().header(0, uint64_t(1) << 60).b, "metadata count 1152921504606846976 cannot fit");
  check(Bytes().header(uint64_t(1) << 60, 0).b, "tensor count 1152921504606846976 cannot fit");
  check(Bytes().header(0, 1).str("k").u32(8).u64(uint64_t(1) << 62).b,
        "a string value has length 4611686018427387904 but only 0 bytes are left");
  check(Bytes().header(0, 1).u64(uint64_t(-1)).u64(0).u64(0).b,
        "a metadata key has length 18446744073709551615 but only 16 bytes are left");
  check(Bytes().header(0, 1).str("k").u32(9).u32(4).u64(uint64_t(1) << 40).b,
        "metadata 'k': array of 1099511627776 u32 elements needs at least");
  check(Bytes().header(0, 1).str("k").u32(9).u32(9).u64(uint64_t(1) << 40).b,
        "array of 1099511627776 array elements");
  Bytes deep;
  deep.header(0, 1).str("k").u32(9);
  for (int i = 0; i < 20; i++) deep.u32(9).u64(1);
  check(deep.b, "arrays nested deeper than 8 levels");
  check(Bytes().header(0, 1).str("b").u32(7).raw("\x02", 1).b, "bool value 2 is neither 0 nor 1");
  check(Bytes().header(0, 2).str("a").u32(4).u32(1).str("a").u32(4).u32(2).b,
        "metadata key 'a' appears twice");
  check(Bytes().header(0, 1).str("general.alignment").u32(4).u32(3).b,
        "general.alignment 3 is not a power of two");
  check(Bytes().header(0, 1).str("general.alignment").u32(10).u64(32).b,
        "general.alignment is u64, expected u32");
  // Tensor infos.
  auto tensor = [](Bytes b, uint32_t n_dims, std::vector<uint64_t> dims, uint32_t type,
                   uint64_t offset) {
    b.str("t").u32(n_dims);
    for (uint64_t d : dims) b.u64(d);
    return b.u32(type).u64(offset);
  };
  check(tensor(Bytes().header(1, 0), 5, {1, 1, 1, 1, 1}, 0, 0).b,
        "tensor 't' has 5 dimensions, at most 4 are allowed");
  check(tensor(Bytes().header(1, 0), 2, {uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0).b,
        "makes the element count overflow");
  check(tensor(Bytes().header(1, 0), 1, {4}, 4, 0).b, "tensor 't' has unknown ggml type 4");
  check(tensor(Bytes().header(1, 0), 1, {4}, 99, 0).b, "unknown ggml type 99");
  check(tensor(Bytes().header(1, 0), 1, {33}, 8, 0).b,
        "row length 33 is not a multiple of the block size 32");
  check(tensor(Bytes().header(1, 0), 1, {4}, 0, 8).b,
        "data offset 8 is not a multiple of the alignment 32");
  check(tensor(Bytes().header(1, 0), 1, {4}, 0, 0).b, "would start at byte 64, past the end");
  Bytes past = tensor(Bytes().header(1, 0), 1, {64}, 0, 0);
  past.b.resize(64 + 100, '\0');
  check(past.b, "tensor 't' (f32 [64], 256 bytes) at data offset 0 ends past the end of the file");
  Bytes dup = tensor(tensor(Bytes().header(2, 0), 1, {4}, 0, 0), 1, {4}, 0, 32);
  check(dup.b, "tensor 't' appears twice");
}

TEST_F(GgufTest, HonoursGeneralAlignmentAndReadsVersion2) {
  // Alignment 64: the data section starts at the next multiple of 64, offsets are multiples of 64.
  Bytes b;
  b.header(2, 1, 2).str("general.alignment").u32(4).u32(64);
  b.str("a").u32(1).u64(2).u32(0).u64(0);
  b.str("b").u32(1).u64(3).u32(0).u64(64);
  b.b.resize((b.b.size() + 63) / 64 * 64, '\0');
  const float a[2] = {1.5f, -2.0f}, c[3] = {3.0f, 4.0f, 5.0f};
  b.raw(a, 8);
  b.b.resize(b.b.size() + 56, '\0');
  b.raw(c, 12);
  write_raw(path("a64.gguf"), b.b);
  const GgufFile f = GgufFile::open(path("a64.gguf"));
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.read_f32(*f.find_tensor("a")), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.read_f32(*f.find_tensor("b")), (std::vector<float>{3.0f, 4.0f, 5.0f}));
  b.b[4] = 3;  // the same bytes as version 3
  write_raw(path("a64.gguf"), b.b);
  EXPECT_EQ(GgufFile::open(path("a64.gguf")).version(), 3u);
  // b's offset (64) -> 32: header 24 + alignment entry 33 + a's info 33 + b's name, dims, type 25.
  ASSERT_EQ(b.b[115], 64);
  b.b[115] = 32;
  write_raw(path("a64.gguf"), b.b);
  EXPECT_THAT(error_of([&] { GgufFile::open(path("a64.gguf")); }),
              HasSubstr("tensor 'b': data offset 32 is not a multiple of the alignment 64"));
}

TEST_F(GgufTest, EveryTruncationOfAValidFileIsAnError) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("llama"));
  w.set("list", GgufValue::of_strings({"a", "bc", ""}));
  const float data[64] = {1.0f};
  w.add_tensor("x", {2, 32}, data, GgmlType::Q8_0);
  w.write(path("ok.gguf"));
  const std::string bytes = read_file_text(path("ok.gguf"));
  // The data ends with the Q8_0 tensor (2 blocks of 34 bytes) and its padding to 96 bytes,
  // which a reader need not insist on: every shorter cut is an error.
  const size_t end = bytes.size() - (96 - 68);
  for (size_t n = 0; n < bytes.size(); n++) {
    write_raw(path("cut.gguf"), bytes.substr(0, n));
    if (n < end) {
      EXPECT_THAT(error_of([&] { GgufFile::open(path("cut.gguf")); }), HasSubstr("cut.gguf"))
          << "truncated to " << n << " bytes";
    } else {
      EXPECT_NO_THROW(GgufFile::open(path("cut.gguf"))) << n;
    }
  }
}

// ---- writer round trips ----

TEST_F(GgufTest, EveryMetadataTypeRoundTrips) {
  auto scalar = [](GgufType t, uint64_t u, int64_t i, double f) {
    GgufValue v;
    v.type = t;
    v.u = u;
    v.i = i;
    v.f = f;
    return v;
  };
  GgufValue nested;  // array of arrays of i16
  nested.type = GgufType::ARRAY;
  nested.array_type = GgufType::ARRAY;
  for (int k = 0; k < 3; k++) {
    GgufValue inner;
    inner.type = GgufType::ARRAY;
    inner.array_type = GgufType::INT16;
    for (int j = 0; j <= k; j++) inner.array.push_back(scalar(GgufType::INT16, 0, -j - k, 0));
    nested.array.push_back(inner);
  }
  GgufWriter w;
  w.set("u8", scalar(GgufType::UINT8, 200, 0, 0));
  w.set("i8", scalar(GgufType::INT8, 0, -100, 0));
  w.set("u16", scalar(GgufType::UINT16, 60000, 0, 0));
  w.set("i16", scalar(GgufType::INT16, 0, -30000, 0));
  w.set("u32", GgufValue::of_u32(4000000000u));
  w.set("i32", GgufValue::of_i32(-2000000000));
  w.set("u64", GgufValue::of_u64(uint64_t(1) << 63));
  w.set("i64", scalar(GgufType::INT64, 0, -(int64_t(1) << 62), 0));
  w.set("f32", GgufValue::of_f32(0.25f));
  w.set("f64", scalar(GgufType::FLOAT64, 0, 0, 1e300));
  w.set("bool", GgufValue::of_bool(true));
  w.set("str", GgufValue::of_string(std::string("a\0b", 3)));
  w.set("strs", GgufValue::of_strings({"x", "", "yz"}));
  w.set("f32s", GgufValue::of_f32s({1.5f, -2.0f}));
  w.set("i32s", GgufValue::of_i32s({7, -8}));
  w.set("nested", nested);
  w.set("u32", GgufValue::of_u32(5));  // replaces, keeps the position
  w.write(path("meta.gguf"));

  const GgufFile f = GgufFile::open(path("meta.gguf"));
  EXPECT_EQ(f.metadata()[4].first, "u32");
  EXPECT_EQ(f.get("u8").as_int("u8"), 200);
  EXPECT_EQ(f.get("i8").as_int("i8"), -100);
  EXPECT_EQ(f.get("u16").as_int("u16"), 60000);
  EXPECT_EQ(f.get("i16").as_int("i16"), -30000);
  EXPECT_EQ(f.get("u32").as_int("u32"), 5);
  EXPECT_EQ(f.get("i32").as_int("i32"), -2000000000);
  EXPECT_EQ(f.get("u64").u, uint64_t(1) << 63);
  EXPECT_THAT(error_of([&] { f.get("u64").as_int("u64"); }),
              HasSubstr("does not fit in a signed 64-bit integer"));
  EXPECT_EQ(f.get("i64").as_int("i64"), -(int64_t(1) << 62));
  EXPECT_EQ(f.get("f32").as_float("f32"), 0.25);
  EXPECT_EQ(f.get("f64").as_float("f64"), 1e300);
  EXPECT_TRUE(f.get("bool").as_bool("bool"));
  EXPECT_EQ(f.get("str").as_string("str"), std::string("a\0b", 3));
  EXPECT_EQ(f.get("strs").as_strings("strs"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f.get("f32s").as_floats("f32s"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.get("i32s").as_ints("i32s"), (std::vector<int64_t>{7, -8}));
  const GgufValue& n = f.get("nested");
  ASSERT_EQ(n.array.size(), 3u);
  EXPECT_EQ(n.array[2].as_ints("n"), (std::vector<int64_t>{-2, -3, -4}));
  EXPECT_EQ(f.get("general.alignment").type, GgufType::UINT32);
  EXPECT_EQ(f.get("general.alignment").u, 32u);
  EXPECT_THAT(error_of([&] { f.get("strs").as_floats("strs"); }),
              HasSubstr("'strs' is array of string, expected an array of numbers"));
}

TEST_F(GgufTest, TensorsRoundTripInEveryWritableType) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(3 * 64);
  for (float& v : x) v = n(rng);
  GgufWriter w;
  w.add_tensor("f32", {3, 64}, x.data(), GgmlType::F32);
  w.add_tensor("f16", {3, 64}, x.data(), GgmlType::F16);
  w.add_tensor("bf16", {3, 64}, x.data(), GgmlType::BF16);
  w.add_tensor("q8_0", {3, 64}, x.data(), GgmlType::Q8_0);
  w.add_tensor("vec", {5}, x.data(), GgmlType::F32);
  EXPECT_THAT(error_of([&] { w.add_tensor("bad", {2, 33}, x.data(), GgmlType::Q8_0); }),
              HasSubstr("row length 33 is not a multiple of the q8_0 block size 32"));
  EXPECT_THAT(error_of([&] { w.add_tensor("f32", {1}, x.data(), GgmlType::F32); }),
              HasSubstr("added twice"));
  w.write(path("t.gguf"));

  const GgufFile f = GgufFile::open(path("t.gguf"));
  ASSERT_EQ(f.tensors().size(), 5u);
  for (const GgufTensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.offset % 32, 0u) << t.name;
    EXPECT_EQ(uintptr_t(t.data - f.tensors()[0].data) % 32, 0u) << t.name;
  }
  EXPECT_EQ(f.find_tensor("q8_0")->dims, (std::vector<int64_t>{64, 3}));
  EXPECT_EQ(f.find_tensor("q8_0")->nbytes, 6u * 34);
  EXPECT_EQ(f.read_f32(*f.find_tensor("f32")), x);
  const auto f16 = f.read_f32(*f.find_tensor("f16"));
  const auto bf16 = f.read_f32(*f.find_tensor("bf16"));
  const auto q8 = f.read_f32(*f.find_tensor("q8_0"));
  for (size_t i = 0; i < x.size(); i++) {
    EXPECT_EQ(f16[i], f16_to_f32(f32_to_f16(x[i])));
    EXPECT_EQ(bf16[i], bf16_to_f32(f32_to_bf16(x[i])));
    float amax = 0;
    for (size_t j = i / 32 * 32; j < i / 32 * 32 + 32; j++) amax = std::max(amax, std::fabs(x[j]));
    // Rounding to the step d, plus d's own f16 rounding times |q| <= 127.
    EXPECT_LE(std::fabs(q8[i] - x[i]), amax / 127 * (0.5f + 127.0f / 2048) + 1e-6f) << i;
  }
  // Q8_0 bytes: f16 d = max|x|/127, then round(x / d) as int8, per block of 32.
  const uint8_t* blk = f.find_tensor("q8_0")->data;
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  uint16_t d;
  std::memcpy(&d, blk, 2);
  EXPECT_EQ(d, f32_to_f16(amax / 127));
  for (int j = 0; j < 32; j++) EXPECT_EQ(int8_t(blk[2 + j]), int(std::round(x[j] * (127 / amax))));
}

// ---- ggml block formats, decoded by hand ----

TEST(GgmlQuant, TypeSizesAndHandMadeBlocks) {
  EXPECT_EQ(ggml_type_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(ggml_type_bytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(ggml_type_bytes(GgmlType::BF16, 3), 6u);
  EXPECT_THAT(error_of([] { ggml_type_bytes(GgmlType::Q4_0, 31); }), HasSubstr("whole q4_0 blocks"));
  EXPECT_STREQ(ggml_type_name(GgmlType(14)), "q6_K");

  // Q4_0: d = 0.5, nibbles j and j+16 = j, 15-j: x = d * (q - 8).
  uint8_t q40[18];
  const uint16_t half = f32_to_f16(0.5f);
  std::memcpy(q40, &half, 2);
  for (int j = 0; j < 16; j++) q40[2 + j] = uint8_t(j | ((15 - j) << 4));
  float y[256];
  ggml_dequantize(GgmlType::Q4_0, q40, y, 32);
  for (int j = 0; j < 16; j++) {
    EXPECT_EQ(y[j], 0.5f * (j - 8));
    EXPECT_EQ(y[j + 16], 0.5f * (15 - j - 8));
  }

  // Q4_K: d = 1, dmin = 2; sub-block s has scale s+1 and min s (6-bit packing for s >= 4).
  uint8_t q4k[144] = {};
  const uint16_t one = f32_to_f16(1.0f), two = f32_to_f16(2.0f);
  std::memcpy(q4k, &one, 2);
  std::memcpy(q4k + 2, &two, 2);
  uint8_t* sc = q4k + 4;
  for (int s = 0; s < 8; s++) {
    const int scale = s + 1 + (s >= 4 ? 32 : 0), min = s + (s >= 4 ? 16 : 0);
    if (s < 4) {
      sc[s] = uint8_t(scale);
      sc[s + 4] = uint8_t(min);
    } else {
      sc[s + 4] = uint8_t((scale & 0x0F) | ((min & 0x0F) << 4));
      sc[s - 4] |= uint8_t((scale >> 4) << 6);
      sc[s] |= uint8_t((min >> 4) << 6);
    }
  }
  for (int i = 0; i < 128; i++) q4k[16 + i] = uint8_t((i % 16) | (((i + 3) % 16) << 4));
  ggml_dequantize(GgmlType::Q4_K, q4k, y, 256);
  for (int s = 0; s < 8; s++)
    for (int j = 0; j < 32; j++) {
      const int scale = s + 1 + (s >= 4 ? 32 : 0), min = s + (s >= 4 ? 16 : 0);
      const int byte = (s / 2) * 32 + j;
      const int q = s % 2 ? (byte + 3) % 16 : byte % 16;
      ASSERT_EQ(y[s * 32 + j], float(scale * q) - 2.0f * min) << s << " " << j;
    }

  // Q6_K: scales[g] = g - 8, d = 0.25, every 6-bit q = 33 -> x = d * scale * 1.
  uint8_t q6k[210] = {};
  for (int i = 0; i < 128; i++) q6k[i] = 0x11;  // low nibbles 1
  for (int i = 0; i < 64; i++) q6k[128 + i] = 0xAA;  // high bits 2 -> q = 1 + 32 = 33
  for (int g = 0; g < 16; g++) q6k[192 + g] = uint8_t(int8_t(g - 8));
  const uint16_t quarter = f32_to_f16(0.25f);
  std::memcpy(q6k + 208, &quarter, 2);
  ggml_dequantize(GgmlType(14), q6k, y, 256);
  for (int i = 0; i < 256; i++) {
    // element i: half h = i/128, within it l = i%32 and quarter k = (i%128)/32 -> scale index
    // h*8 + l/16 + 2k.
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    ASSERT_EQ(y[i], 0.25f * float(h * 8 + l / 16 + 2 * k - 8)) << i;
  }
}

// ---- RoPE permutation ----

TEST(GgufRope, PermutationInterleavesHalvesPerHeadAndInverts) {
  // 2 heads of 4 rows, 1 column: HF rows (per head) [a0 a1 b0 b1] -> llama.cpp [a0 b0 a1 b1].
  std::vector<float> rows = {0, 1, 2, 3, 10, 11, 12, 13};
  gguf_rope_permute(rows.data(), 8, 1, 2, false);
  EXPECT_EQ(rows, (std::vector<float>{0, 2, 1, 3, 10, 12, 11, 13}));
  gguf_rope_permute(rows.data(), 8, 1, 2, true);
  EXPECT_EQ(rows, (std::vector<float>{0, 1, 2, 3, 10, 11, 12, 13}));
  const ModelConfig llama = small_config("llama"), qwen = small_config("qwen2");
  EXPECT_EQ(gguf_rope_permute_heads(llama, "model.layers.1.self_attn.q_proj.weight"), 4);
  EXPECT_EQ(gguf_rope_permute_heads(llama, "model.layers.1.self_attn.k_proj.weight"), 2);
  EXPECT_EQ(gguf_rope_permute_heads(llama, "model.layers.1.self_attn.v_proj.weight"), 0);
  EXPECT_EQ(gguf_rope_permute_heads(qwen, "model.layers.1.self_attn.q_proj.weight"), 0);
}

// ---- vocabularies ----

TEST(GgufVocab, ByteLevelVocabularyUsesGpt2ByteSpelling) {
  const GgufVocab v = gguf_vocab_bytes();
  ASSERT_EQ(v.tokens.size(), 256u);
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.tokens['a'], "a");
  EXPECT_EQ(v.tokens[' '], "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(v.tokens['\n'], "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(v.tokens[0], "\xC4\x80");     // U+0100
  EXPECT_EQ(v.tokens[255], "\xC3\xBF");   // U+00FF itself
  EXPECT_EQ(v.tokens[173], "\xC5\x83");   // soft hyphen: the 68th unprintable byte -> U+0143
  std::set<std::string> unique(v.tokens.begin(), v.tokens.end());
  EXPECT_EQ(unique.size(), 256u);
  EXPECT_TRUE(v.merges.empty());
}

TEST(GgufVocab, FromHuggingFaceTokenizerJson) {
  const GgufVocab gpt2 = gguf_vocab_from_file(kHf + "gpt2/tokenizer.json");
  EXPECT_EQ(gpt2.model, "gpt2");
  EXPECT_EQ(gpt2.pre, "gpt-2");
  ASSERT_EQ(gpt2.tokens.size(), 50257u);
  EXPECT_EQ(gpt2.merges.size(), 50000u);
  EXPECT_EQ(gpt2.merges[0], "\xC4\xA0 t");
  EXPECT_EQ(gpt2.types[50256], int(GgufTokenType::Control));
  EXPECT_EQ(gpt2.bos, 50256);
  EXPECT_EQ(gpt2.eos, 50256);

  const GgufVocab qwen = gguf_vocab_from_file(kHf + "qwen3");  // a directory
  EXPECT_EQ(qwen.pre, "qwen2");
  EXPECT_EQ(qwen.eos, 151645);  // <|im_end|>
  EXPECT_EQ(qwen.add_bos, false);
  EXPECT_EQ(qwen.tokens[151644], "<|im_start|>");

  const GgufVocab mistral = gguf_vocab_from_file(kHf + "mistral-7b-v0.1/tokenizer.json");
  EXPECT_EQ(mistral.model, "llama");
  ASSERT_EQ(mistral.tokens.size(), 32000u);
  EXPECT_EQ(mistral.unk, 0);
  EXPECT_EQ(mistral.bos, 1);
  EXPECT_EQ(mistral.eos, 2);
  EXPECT_EQ(mistral.types[0], int(GgufTokenType::Unknown));
  EXPECT_EQ(mistral.types[1], int(GgufTokenType::Control));
  EXPECT_EQ(mistral.types[3 + 0x0A], int(GgufTokenType::Byte));
  EXPECT_EQ(mistral.tokens[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(mistral.add_bos, true);
  EXPECT_EQ(mistral.add_space_prefix, true);
  // Score = -(rank of the first merge making the token): "▁t" is merge 0; 11 x "▁" is made by
  // several merges; single characters are never merged into, and score 0.
  EXPECT_EQ(mistral.scores[261], 0.0f);
  EXPECT_EQ(mistral.scores[17422], -58970.0f);  // merge 58970 makes it first
  EXPECT_EQ(mistral.scores[28705], 0.0f);
}

TEST(GgufVocab, FromSentencePieceModelMatchesTheSentencePieceLibrary) {
  const GgufVocab v = gguf_vocab_from_file(kSpm + "llama2-tokenizer.model");
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(kSpm + "llama2-tokenizer.model").ok());
  ASSERT_EQ(int(v.tokens.size()), sp.GetPieceSize());
  for (int id = 0; id < sp.GetPieceSize(); id++) {
    ASSERT_EQ(v.tokens[id], sp.IdToPiece(id)) << id;
    ASSERT_EQ(v.scores[id], sp.GetScore(id)) << id;
    const int type = sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsByte(id) ? 6
                     : sp.IsUnused(id) ? 5 : 1;
    ASSERT_EQ(v.types[id], type) << id;
  }
  EXPECT_EQ(v.bos, sp.bos_id());
  EXPECT_EQ(v.eos, sp.eos_id());
  EXPECT_EQ(v.unk, sp.unk_id());
  EXPECT_EQ(v.add_space_prefix, true);
  EXPECT_EQ(v.remove_extra_whitespaces, false);
  EXPECT_THAT(error_of([] { gguf_vocab_from_file(kSpm + "albert-30k-clean.model"); }),
              HasSubstr("SentencePiece model type UNIGRAM is not supported"));
}

TEST_F(GgufTest, VocabularyErrorsNameTheFile) {
  write_raw(path("tokenizer.json"), R"({"model": {"type": "WordPiece", "vocab": {}}})");
  EXPECT_THAT(error_of([&] { gguf_vocab_from_file(path("tokenizer.json")); }),
              HasSubstr("tokenizer model type 'WordPiece' is not supported"));
  write_raw(path("bad.model"), std::string("\x0a\xff\xff\xff\x0f", 5));
  EXPECT_THAT(error_of([&] { gguf_vocab_from_file(path("bad.model")); }),
              HasSubstr("bad.model: not a valid SentencePiece model"));
  GgufVocab v = gguf_vocab_bytes();
  EXPECT_THAT(error_of([&] { gguf_vocab_pad(v, 100); }),
              HasSubstr("tokenizer bytes has 256 tokens but the model's vocabulary is only 100"));
  gguf_vocab_pad(v, 260);
  EXPECT_EQ(v.tokens[259], "[PAD259]");
  EXPECT_EQ(v.types[259], int(GgufTokenType::Unused));
}

// ---- models: export, then import ----

class GgufModelTest : public GgufTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(GgufModelTest, ExportImportRoundTripIsExactForF32) {
  ModelConfig c = small_config(GetParam());
  if (GetParam() == "llama") {
    c.qkv_bias = c.o_bias = c.mlp_bias = true;  // llama attention_bias/mlp_bias
    c.rope_scaling.type = RopeScaling::Type::Llama3;
    c.rope_scaling.factor = 8.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position = 32;
  }
  if (GetParam() == "mistral") {
    c.rope_scaling.type = RopeScaling::Type::Linear;
    c.rope_scaling.factor = 2.0f;
  }
  auto model = random_model(c, 3);
  const GgufExportReport r = export_gguf(*model, gguf_export_vocab(*model, "", ""),
                                         path("m.gguf"), {GgmlType::F32, "test"});
  const GgufFile f = GgufFile::open(path("m.gguf"));
  const std::string arch = GetParam() == "mistral" ? "llama" : GetParam();
  EXPECT_EQ(r.arch, arch);
  EXPECT_EQ(f.get("general.architecture").as_string(""), arch);
  EXPECT_EQ(f.get(arch + ".block_count").type, GgufType::UINT32);
  EXPECT_EQ(f.get(arch + ".embedding_length").u, 64u);
  EXPECT_EQ(f.get("tokenizer.ggml.model").as_string(""), "gpt2");
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").array.size(), 256u);
  EXPECT_EQ(f.get("tokenizer.ggml.merges").array.size(), 0u);
  EXPECT_NE(f.find_tensor("blk.1.ffn_down.weight"), nullptr);
  EXPECT_EQ(f.find_tensor("output.weight") != nullptr, !c.tie_word_embeddings);
  if (GetParam() == "qwen3") {
    EXPECT_EQ(f.get("qwen3.attention.key_length").u, 32u);
    EXPECT_NE(f.find_tensor("blk.0.attn_k_norm.weight"), nullptr);
  }
  if (GetParam() == "llama") {
    EXPECT_NE(f.find_tensor("rope_freqs.weight"), nullptr);
  }
  if (GetParam() == "mistral") {
    EXPECT_EQ(f.get("llama.rope.scaling.type").as_string(""), "linear");
  }
  if (GetParam() == "gpt2") {
    EXPECT_EQ(f.find_tensor("blk.0.attn_qkv.weight")->dims, (std::vector<int64_t>{64, 192}));
    EXPECT_EQ(f.find_tensor("blk.0.ffn_up.weight")->dims, (std::vector<int64_t>{64, 96}));
    EXPECT_NE(f.find_tensor("position_embd.weight"), nullptr);
  }

  auto back = load_gguf_model(f);
  const ModelConfig& b = back->config();
  EXPECT_EQ(b.model_type, GetParam() == "mistral" ? "llama" : GetParam());
  EXPECT_EQ(b.num_kv_heads, c.num_kv_heads);
  EXPECT_EQ(b.head_dim, c.head_dim);
  EXPECT_EQ(b.tie_word_embeddings, c.tie_word_embeddings);
  EXPECT_EQ(b.qkv_bias, c.qkv_bias);
  EXPECT_EQ(b.qk_norm, c.qk_norm);
  EXPECT_EQ(b.rope_scaling.type, c.rope_scaling.type);
  ASSERT_EQ(back->num_params(), model->num_params());
  for (size_t i = 0; i < model->num_params(); i++)
    ASSERT_EQ(back->params()[i], model->params()[i]) << "parameter element " << i;
  if (c.rope_scaling.type != RopeScaling::Type::None) {
    // The same frequencies (llama3's parameters themselves are not unique, see gguf_import.cpp).
    std::vector<float> fa(c.head_dim / 2), fb(c.head_dim / 2);
    rope_inv_freq(fa.data(), c.head_dim, c.rope_theta, c.rope_scaling);
    rope_inv_freq(fb.data(), b.head_dim, b.rope_theta, b.rope_scaling);
    for (size_t i = 0; i < fa.size(); i++) EXPECT_NEAR(fb[i], fa[i], 1e-6f * fa[i]) << i;
    EXPECT_EQ(b.rope_scaling.factor, c.rope_scaling.factor);
    EXPECT_EQ(b.rope_scaling.original_max_position, c.rope_scaling.original_max_position);
  }
  const std::vector<int32_t> ids = {1, 50, 200, 7, 7, 255};
  const auto a = logits_of(*model, ids), z = logits_of(*back, ids);
  for (size_t i = 0; i < a.size(); i++) ASSERT_NEAR(a[i], z[i], 1e-5f) << i;
}

TEST_P(GgufModelTest, QuantizedExportsStayClose) {
  auto model = random_model(small_config(GetParam()), 5);
  const GgufVocab vocab = gguf_export_vocab(*model, "", "bytes");
  for (GgmlType type : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0}) {
    const GgufExportReport r = export_gguf(*model, vocab, path("q.gguf"), {type, ""});
    const GgufFile f = GgufFile::open(path("q.gguf"));
    EXPECT_EQ(f.find_tensor("token_embd.weight")->type, type);
    EXPECT_EQ(f.find_tensor("output_norm.weight")->type, GgmlType::F32);
    EXPECT_EQ(r.f16_fallbacks, 0u);
    auto back = load_gguf_model(f);
    const float tol = type == GgmlType::F16 ? 1e-3f : 2e-2f;
    for (const ParamSpec& s : model->param_specs())
      for (size_t i = 0; i < s.numel; i++) {
        const float x = model->params()[s.offset + i], y = back->params()[s.offset + i];
        ASSERT_NEAR(x, y, tol * std::max(0.05f, std::fabs(x))) << s.name << "[" << i << "]";
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, GgufModelTest,
                         ::testing::Values("gpt2", "llama", "mistral", "qwen2", "qwen3"));

TEST_F(GgufTest, Q8_0FallsBackToF16ForShortRows) {
  ModelConfig c = small_config("llama");
  c.hidden_size = 48;  // rows of 48: not a multiple of 32
  c.head_dim = 12;
  auto model = random_model(c, 2);
  const GgufExportReport r =
      export_gguf(*model, gguf_export_vocab(*model, "", ""), path("f.gguf"), {GgmlType::Q8_0, ""});
  const GgufFile f = GgufFile::open(path("f.gguf"));
  EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type, GgmlType::F16);
  EXPECT_EQ(f.find_tensor("blk.0.ffn_down.weight")->type, GgmlType::Q8_0);  // rows of 96
  EXPECT_GT(r.f16_fallbacks, 0u);
  EXPECT_EQ(f.get("general.file_type").u, 7u);
}

TEST_F(GgufTest, ExportRefusesWhatLlamaCppCannotRun) {
  ModelConfig c = small_config("qwen2");
  c.head_dim = 32;
  EXPECT_THAT(error_of([&] { gguf_arch_name(c); }),
              HasSubstr("qwen2 architecture needs head_dim * heads == hidden size"));
  c = small_config("qwen3");
  c.mlp_bias = true;
  EXPECT_THAT(error_of([&] { gguf_arch_name(c); }), HasSubstr("has no MLP bias"));
  c = small_config("llama");
  c.vocab_size = 300;
  Model m(c);
  EXPECT_THAT(error_of([&] { gguf_export_vocab(m, "/nonexistent", ""); }),
              HasSubstr("vocab_size 300 is not the byte-level 256: pass --tokenizer"));
}

TEST(GgufImport, LoadsOllamaTinyLlamaAndRunsIt) {
  auto model = load_gguf_model(kGguf + "ollama-llama-2-tiny-random.gguf");
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 8);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.intermediate_size, 32);
  EXPECT_EQ(c.max_position, 4096);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  const std::vector<int32_t> ids = {1, 15043, 3186, 29991, 13};
  const auto logits = logits_of(*model, ids);
  for (size_t t = 0; t < ids.size(); t++) {
    const float* l = logits.data() + t * 32000;
    double mx = -1e30, sum = 0;
    for (int v = 0; v < 32000; v++) {
      ASSERT_TRUE(std::isfinite(l[v]));
      mx = std::max(mx, double(l[v]));
    }
    for (int v = 0; v < 32000; v++) sum += std::exp(double(l[v]) - mx);
    double psum = 0;  // softmax(l) sums to 1
    for (int v = 0; v < 32000; v++) psum += std::exp(double(l[v]) - mx) / sum;
    EXPECT_NEAR(psum, 1.0, 1e-9);
    EXPECT_GT(mx - std::log(sum) - mx, -std::log(32000.0) - 5);  // not degenerate
  }
}

TEST_F(GgufTest, ImportWritesAModelDirectoryThatLoadsTheSame) {
  const GgufImportReport r =
      import_gguf(kGguf + "ollama-llama-2-tiny-random.gguf", path("dir"), {});
  EXPECT_EQ(r.arch, "llama");
  EXPECT_EQ(r.tensors, 12u);
  auto a = load_gguf_model(kGguf + "ollama-llama-2-tiny-random.gguf");
  auto b = load_model_dir(path("dir"));
  ASSERT_EQ(a->num_params(), b->num_params());
  EXPECT_EQ(std::memcmp(a->params(), b->params(), a->num_params() * sizeof(float)), 0);
}

TEST_F(GgufTest, ImportWritesTheSentencePieceVocabularyAsTokenizerModel) {
  const std::string gguf = kGguf + "ollama-llama-2-tiny-random.gguf";
  const GgufImportReport r = import_gguf(gguf, path("dir"), {});
  ASSERT_EQ(r.tokenizer_file, "tokenizer.model") << r.tokenizer_note;
  const GgufVocab original = gguf_vocab_read(GgufFile::open(gguf));
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(path("dir/tokenizer.model")).ok());
  ASSERT_EQ(sp.GetPieceSize(), 32000);
  for (int id = 0; id < 32000; id++) {
    ASSERT_EQ(sp.IdToPiece(id), original.tokens[id]);
    ASSERT_EQ(sp.GetScore(id), original.scores[id]);
  }
  EXPECT_EQ(sp.unk_id(), 0);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_TRUE(sp.IsByte(13));
  std::vector<int> ids;
  ASSERT_TRUE(sp.Encode("Hello world\n", &ids).ok());
  EXPECT_EQ(ids, (std::vector<int>{15043, 3186, 13}));  // what llama.cpp gives (interop test)
  // Exporting the imported directory embeds the same vocabulary again.
  auto model = load_model_dir(path("dir"));
  const GgufVocab again = gguf_export_vocab(*model, path("dir"), "");
  EXPECT_EQ(again.model, "llama");
  EXPECT_EQ(again.tokens, original.tokens);
  EXPECT_EQ(again.scores, original.scores);
  EXPECT_EQ(again.types, original.types);
  EXPECT_EQ(again.bos, 1);
  EXPECT_EQ(again.eos, 2);
  EXPECT_EQ(again.unk, 0);
}

TEST_F(GgufTest, ImportWritesByteLevelVocabulariesAsTokenizerJson) {
  for (const std::string& source : {std::string("bytes"), kHf + "gpt2/tokenizer.json"}) {
    SCOPED_TRACE(source);
    const GgufVocab vocab = source == "bytes" ? gguf_vocab_bytes() : gguf_vocab_from_file(source);
    ModelConfig c = small_config("gpt2");
    c.vocab_size = int(vocab.tokens.size());
    c.hidden_size = 32;
    c.num_layers = 1;
    c.intermediate_size = 32;
    c.num_heads = c.num_kv_heads = 1;
    c.head_dim = 32;
    Model model(c);
    model.init_weights(1);
    export_gguf(model, vocab, path("m.gguf"), {GgmlType::Q8_0, ""});
    fs::remove_all(path("dir"));
    const GgufImportReport r = import_gguf(path("m.gguf"), path("dir"), {});
    ASSERT_EQ(r.tokenizer_file, "tokenizer.json") << r.tokenizer_note;
    const GgufVocab back = gguf_vocab_from_file(path("dir"));
    EXPECT_EQ(back.model, "gpt2");
    EXPECT_EQ(back.pre, "gpt-2");
    EXPECT_EQ(back.tokens, vocab.tokens);
    EXPECT_EQ(back.types, vocab.types);
    EXPECT_EQ(back.merges, vocab.merges);
    EXPECT_EQ(back.bos, vocab.bos);
    EXPECT_EQ(back.eos, vocab.eos);
  }
  // A vocabulary with no tokenizer file: the model is imported, the note says why.
  ModelConfig c = small_config("gpt2");
  Model model(c);
  GgufVocab odd = gguf_vocab_bytes();
  odd.pre = "falcon";
  export_gguf(model, odd, path("odd.gguf"), {});
  const GgufImportReport r = import_gguf(path("odd.gguf"), path("odd"), {});
  EXPECT_EQ(r.tokenizer_file, "");
  EXPECT_THAT(r.tokenizer_note, HasSubstr("pre-tokenizer 'falcon' has no tokenizer.json equivalent"));
  EXPECT_TRUE(fs::exists(path("odd/model.safetensors")));
}

TEST_F(GgufTest, ImportErrorsNameTheTensorOrKey) {
  auto model = random_model(small_config("llama"), 1);
  const GgufVocab vocab = gguf_export_vocab(*model, "", "");
  export_gguf(*model, vocab, path("m.gguf"));
  const GgufFile good = GgufFile::open(path("m.gguf"));
  // Rewrite with one tensor dropped, one reshaped, one key missing, an extra tensor.
  auto rewrite = [&](const std::function<bool(GgufWriter&, const GgufTensorInfo&)>& edit,
                     const std::string& skip_key, uint32_t block_count = 0) {
    GgufWriter w;
    for (const auto& [k, v] : good.metadata())
      if (k != skip_key) w.set(k, v);
    if (block_count) w.set("llama.block_count", GgufValue::of_u32(block_count));
    for (const GgufTensorInfo& t : good.tensors()) {
      if (edit(w, t)) continue;
      const std::vector<float> data = good.read_f32(t);
      w.add_tensor(t.name, std::vector<int64_t>(t.dims.rbegin(), t.dims.rend()), data.data(),
                   GgmlType::F32);
    }
    w.write(path("bad.gguf"));
    return error_of([&] { load_gguf_model(path("bad.gguf")); });
  };
  auto none = [](GgufWriter&, const GgufTensorInfo&) { return false; };
  EXPECT_THAT(rewrite([](GgufWriter&, const GgufTensorInfo& t) { return t.name == "blk.1.attn_v.weight"; }, ""),
              HasSubstr("bad.gguf: tensor 'blk.1.attn_v.weight' is missing (expected dims [64, 32]"));
  EXPECT_THAT(rewrite([](GgufWriter& w, const GgufTensorInfo& t) {
                if (t.name != "output_norm.weight") return false;
                const float z[32] = {};
                w.add_tensor(t.name, {32}, z, GgmlType::F32);
                return true;
              }, ""),
              HasSubstr("tensor 'output_norm.weight' has dims [32], expected [64]"));
  EXPECT_THAT(rewrite(none, "llama.block_count"),
              HasSubstr("GGUF metadata key 'llama.block_count' is missing"));
  // Found by fuzzing: a huge block_count must not build a huge parameter list first.
  EXPECT_THAT(rewrite(none, "", 1u << 30),
              HasSubstr("block_count 1073741824 but the file has only 21 tensors"));
  EXPECT_THAT(rewrite([](GgufWriter& w, const GgufTensorInfo& t) {
                if (t.name == "output_norm.weight") {
                  const float z[4] = {};
                  w.add_tensor("blk.0.extra.weight", {4}, z, GgmlType::F32);
                }
                return false;
              }, ""),
              HasSubstr("tensor 'blk.0.extra.weight' is not part of a llama model"));
}

}  // namespace
