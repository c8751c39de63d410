// safetensors reader/writer, sharded checkpoints, dtype conversions, mmap and atomic file writes.
// Third-party fixtures: tests/data/safetensors (see tests/data/README.md).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include <csignal>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/mmap.h"
#include "formats/dtype.h"
#include "formats/safetensors.h"

namespace fs = std::filesystem;
using namespace distill;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace {

const std::string kSamples =
    std::string(DISTILL_TESTDATA) + "/safetensors/hf-safetensors-samples-2022-11-17/";
const std::string kOllama = std::string(DISTILL_TESTDATA) + "/safetensors/ollama-testdata/";

const DType kAllDTypes[] = {DType::BOOL, DType::U8,  DType::I8,  DType::U16, DType::I16,
                            DType::U32,  DType::I32, DType::U64, DType::I64, DType::F16,
                            DType::BF16, DType::F32, DType::F64};

// The message of the distill::Error that f throws, or "<no error>".
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A safetensors file from a literal header and buffer (no padding, so headers can be anything).
std::string make_file(const std::string& header, const std::string& buffer) {
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + buffer;
}

// Each test gets its own directory under the system temp dir, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::temp_directory_path() /
            (std::string("distill-st-") + info->name() + "-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter++)))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Third-party fixtures

struct Sample {
  const char* file;  // also the tensor name
  DType dtype;
  std::vector<float> values;  // -3..2 cast to the dtype, read back as float
};

// -3..2 cast to an unsigned type wraps modulo 2^bits (the bytes are fd fe ff 00 01 02 for U8);
// U32's 2^32-3 is not representable in fp32 and reads back as 2^32.
std::vector<Sample> samples() {
  const std::vector<float> signed_values = {-3, -2, -1, 0, 1, 2};
  return {
      {"B", DType::U8, {253, 254, 255, 0, 1, 2}},
      {"H", DType::U16, {65533, 65534, 65535, 0, 1, 2}},
      {"I", DType::U32, {4294967296.0f, 4294967296.0f, 4294967296.0f, 0, 1, 2}},
      {"b", DType::I8, signed_values},
      {"h", DType::I16, signed_values},
      {"i", DType::I32, signed_values},
      {"e", DType::F16, signed_values},
      {"f", DType::F32, signed_values},
      {"d", DType::F64, signed_values},
  };
}

TEST(SafetensorsFixtures, EachDtypeFileHoldsMinus3To2) {
  for (const Sample& s : samples()) {
    SCOPED_TRACE(s.file);
    SafetensorsFile st = SafetensorsFile::open(kSamples + s.file + ".safetensors");
    ASSERT_EQ(st.tensors().size(), 1u);
    const TensorInfo& t = st.get(s.file);
    EXPECT_EQ(t.name, s.file);
    EXPECT_EQ(t.dtype, s.dtype);
    EXPECT_EQ(t.shape, std::vector<int64_t>{6});
    EXPECT_EQ(t.nbytes, 6 * dtype_size(s.dtype));
    EXPECT_EQ(st.metadata(), (std::map<std::string, std::string>{{"test", "a"}}));
    EXPECT_EQ(st.read_f32(s.file), s.values);
  }
  // The unsigned files hold the wrapped two's-complement bytes, not clamped values.
  SafetensorsFile u32 = SafetensorsFile::open(kSamples + "I.safetensors");
  uint32_t first;
  std::memcpy(&first, u32.get("I").data, 4);
  EXPECT_EQ(first, 4294967293u);
  SafetensorsFile u16 = SafetensorsFile::open(kSamples + "H.safetensors");
  EXPECT_EQ(u16.get("H").data[0], 0xfd);
  EXPECT_EQ(u16.get("H").data[1], 0xff);
}

TEST(SafetensorsFixtures, OverallHoldsAllNineInHeaderOrder) {
  SafetensorsFile all = SafetensorsFile::open(kSamples + "overall.safetensors");
  EXPECT_EQ(all.metadata(), (std::map<std::string, std::string>{{"test", "a"}}));
  std::vector<std::string> names;
  for (const TensorInfo& t : all.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"B", "H", "I", "b", "d", "e", "f", "h", "i"}));
  for (const Sample& s : samples()) {
    SCOPED_TRACE(s.file);
    SafetensorsFile one = SafetensorsFile::open(kSamples + s.file + ".safetensors");
    const TensorInfo& a = all.get(s.file);
    const TensorInfo& b = one.get(s.file);
    EXPECT_EQ(a.dtype, b.dtype);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0);
    EXPECT_EQ(all.read_f32(s.file), s.values);
  }
}

// Every tensor is F32 with nbytes == numel * 4 and finite values; returns the bytes of all of them.
size_t f32_bytes_checked(const SafetensorsFile& st) {
  size_t total = 0;
  for (const TensorInfo& t : st.tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.dtype, DType::F32);
    EXPECT_EQ(static_cast<size_t>(t.numel()) * dtype_size(t.dtype), t.nbytes);
    const std::vector<float> values = st.read_f32(t.name);
    EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); }))
        << "non-finite values";
    total += t.nbytes;
  }
  return total;
}

TEST(SafetensorsFixtures, DiscollamaOffsetsNotInHeaderOrder) {
  SafetensorsFile st = SafetensorsFile::open(kOllama + "discollama-adapters.safetensors");
  ASSERT_EQ(st.tensors().size(), 8u);
  EXPECT_TRUE(st.metadata().empty());  // the header says "__metadata__": null
  EXPECT_EQ(f32_bytes_checked(st), 851968u);  // the whole buffer: file size - 8 - 864-byte header
  bool offsets_ascending = true;
  for (size_t i = 1; i < st.tensors().size(); ++i) {
    offsets_ascending &= st.tensors()[i].data > st.tensors()[i - 1].data;
  }
  EXPECT_FALSE(offsets_ascending);
  EXPECT_EQ(st.get("model.layers.30.self_attn.v_proj.lora_b").shape,
            (std::vector<int64_t>{8, 1024}));
  EXPECT_EQ(st.get("model.layers.31.self_attn.q_proj.lora_a").shape,
            (std::vector<int64_t>{4096, 8}));
}

TEST(SafetensorsFixtures, Minicpm3ShapesMatchBytes) {
  SafetensorsFile st = SafetensorsFile::open(kOllama + "minicpm3-4b-model.safetensors");
  ASSERT_EQ(st.tensors().size(), 15u);
  EXPECT_EQ(f32_bytes_checked(st), 402000u);
  EXPECT_EQ(st.tensors().front().name, "lm_head.weight");
  EXPECT_EQ(st.get("lm_head.weight").shape, (std::vector<int64_t>{100, 100}));
  EXPECT_EQ(st.get("model.norm.weight").shape, (std::vector<int64_t>{100}));
  EXPECT_THAT(error_of([&] { st.get("model.nope"); }),
              AllOf(HasSubstr("minicpm3-4b-model.safetensors"), HasSubstr("'model.nope'")));
}

// ---------------------------------------------------------------------------------------------
// Writer

using SafetensorsWriterTest = TempDirTest;

TEST_F(SafetensorsWriterTest, RoundTripEveryDtypeExactBytes) {
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> buffers;
  SafetensorsWriter w;
  for (DType d : kAllDTypes) {
    std::vector<uint8_t> bytes(3 * 5 * dtype_size(d));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(d == DType::BOOL ? rng() & 1 : rng());
    buffers.push_back(std::move(bytes));
    w.add(std::string("t.") + dtype_name(d), d, {3, 5}, buffers.back().data(),
          buffers.back().size());
  }
  w.add("scalar", DType::F32, {}, buffers.back().data(), 4);
  w.add("empty", DType::F16, {0, 4}, nullptr, 0);
  w.set_metadata("format", "pt");
  const std::string file = path("all.safetensors");
  w.write(file);
  EXPECT_EQ(fs::file_size(file), w.total_bytes());

  SafetensorsFile st = SafetensorsFile::open(file);
  ASSERT_EQ(st.tensors().size(), std::size(kAllDTypes) + 2);
  EXPECT_EQ(st.metadata().at("format"), "pt");
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    const TensorInfo& t = st.tensors()[i];  // header keeps insertion order
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, std::string("t.") + dtype_name(kAllDTypes[i]));
    EXPECT_EQ(t.dtype, kAllDTypes[i]);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 5}));
    ASSERT_EQ(t.nbytes, buffers[i].size());
    EXPECT_EQ(std::memcmp(t.data, buffers[i].data(), t.nbytes), 0);
    // The mapping is page-aligned, so this checks the tensor's offset in the file.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u);
  }
  EXPECT_EQ(st.get("scalar").numel(), 1);
  EXPECT_EQ(st.get("empty").nbytes, 0u);

  // What the reference reader (and so transformers) demands: header padded to 8 bytes, and the
  // offsets, sorted, tile the buffer from 0 to the end of the file with no gaps.
  const std::string raw = read_file_text(file);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  auto header = nlohmann::json::parse(raw.substr(8, n));
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [k, v] : header.items()) {
    if (k != "__metadata__") spans.emplace_back(v["data_offsets"][0], v["data_offsets"][1]);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t end = 0;
  for (auto [b, e] : spans) {
    EXPECT_EQ(b, end);
    end = e;
  }
  EXPECT_EQ(8 + n + end, raw.size());
}

TEST_F(SafetensorsWriterTest, BytesMatchTheFormatsReferenceLayout) {
  const float values[] = {0, 1, 2, 3, 4, 5};
  SafetensorsWriter w;
  w.add("attn.0", DType::F32, {1, 2, 3}, values, sizeof values);
  w.write(path("a.safetensors"));
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);  // already a multiple of 8: no padding
  EXPECT_EQ(read_file_text(path("a.safetensors")),
            make_file(header, std::string(reinterpret_cast<const char*>(values), 24)));

  SafetensorsWriter empty;
  empty.write(path("empty.safetensors"));
  EXPECT_EQ(read_file_text(path("empty.safetensors")), make_file("{}      ", ""));

  SafetensorsWriter meta;
  meta.set_metadata("framework", "pt");
  meta.write(path("meta.safetensors"));
  EXPECT_EQ(read_file_text(path("meta.safetensors")),
            make_file(R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '), ""));
}

TEST_F(SafetensorsWriterTest, HalfPrecisionValuesRoundTrip) {
  const std::vector<float> values = {0.1f, -2.5f, 65504.0f, 1e-7f, 3.14159f};
  for (DType d : {DType::F16, DType::BF16, DType::F64}) {
    SCOPED_TRACE(dtype_name(d));
    std::vector<uint8_t> bytes(values.size() * dtype_size(d));
    convert_from_f32(bytes.data(), d, values.data(), values.size());
    SafetensorsWriter w;
    w.add("x", d, {5}, bytes.data(), bytes.size());
    w.write(path("h.safetensors"));
    SafetensorsFile st = SafetensorsFile::open(path("h.safetensors"));
    std::vector<float> expected(values.size());
    convert_to_f32(expected.data(), bytes.data(), d, values.size());
    EXPECT_EQ(st.read_f32("x"), expected);
    EXPECT_EQ(std::memcmp(st.get("x").data, bytes.data(), bytes.size()), 0);
  }
}

TEST_F(SafetensorsWriterTest, AddRejectsBadTensors) {
  float data[6] = {};
  SafetensorsWriter w;
  EXPECT_THAT(error_of([&] { w.add("w", DType::F32, {2, 3}, data, 20); }),
              AllOf(HasSubstr("'w'"), HasSubstr("[2, 3]"), HasSubstr("needs 24 bytes, got 20")));
  EXPECT_THAT(error_of([&] { w.add("w", DType::F32, {-1, 3}, data, 12); }), HasSubstr("'w'"));
  EXPECT_THAT(error_of([&] { w.add("__metadata__", DType::F32, {6}, data, 24); }),
              HasSubstr("reserved"));
  EXPECT_THAT(error_of([&] { w.add("", DType::F32, {6}, data, 24); }), HasSubstr("empty"));
  EXPECT_THAT(error_of([&] { w.add("bad\xff", DType::F32, {6}, data, 24); }),
              HasSubstr("UTF-8"));
  w.add("w", DType::F32, {6}, data, 24);
  EXPECT_THAT(error_of([&] { w.add("w", DType::F32, {6}, data, 24); }),
              AllOf(HasSubstr("'w'"), HasSubstr("twice")));
}

// ---------------------------------------------------------------------------------------------
// Corrupt files: every error names the file (and tensor) and the problem.

using SafetensorsCorruptTest = TempDirTest;

TEST_F(SafetensorsCorruptTest, TruncatedAndShortFiles) {
  const float values[] = {1, 2, 3, 4};
  SafetensorsWriter w;
  w.add("weight", DType::F32, {4}, values, sizeof values);
  const std::string good = path("good.safetensors");
  w.write(good);
  std::string raw = read_file_text(good);

  const std::string cut = path("cut.safetensors");
  write_raw(cut, raw.substr(0, raw.size() - 3));
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(cut); }),
              AllOf(HasSubstr(cut), HasSubstr("'weight'"), HasSubstr("past the end"),
                    HasSubstr("truncated")));

  const std::string stub = path("stub.safetensors");
  write_raw(stub, raw.substr(0, 5));
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(stub); }),
              AllOf(HasSubstr(stub), HasSubstr("5 bytes"), HasSubstr("8-byte")));

  write_raw(stub, "");
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(stub); }),
              AllOf(HasSubstr(stub), HasSubstr("0 bytes")));

  const std::string missing = path("missing.safetensors");
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(missing); }),
              AllOf(HasSubstr(missing), HasSubstr("No such file")));
}

TEST_F(SafetensorsCorruptTest, HeaderLengthProblems) {
  const std::string f = path("bad.safetensors");
  std::string raw = make_file("{}", "");
  uint64_t n = 1000;
  std::memcpy(raw.data(), &n, 8);
  write_raw(f, raw);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(f); }),
              AllOf(HasSubstr(f), HasSubstr("header length 1000 exceeds the 2 bytes")));

  n = uint64_t{1} << 40;
  std::memcpy(raw.data(), &n, 8);
  write_raw(f, raw);
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(f); }),
              AllOf(HasSubstr(f), HasSubstr("1099511627776"), HasSubstr("limit")));
}

// One corrupt header per case: the file is rewritten and must fail with all `expected` parts.
struct CorruptCase {
  const char* what;
  std::string header;
  std::string buffer;
  std::vector<std::string> expected;
};

TEST_F(SafetensorsCorruptTest, BadHeaders) {
  const std::string b16(16, '\0');
  const std::vector<CorruptCase> cases = {
      {"invalid json", R"({"w":{"dtype":"F32",)", b16, {"not valid JSON", "parse error"}},
      {"not an object", "[1,2]", b16, {"must be a JSON object", "array"}},
      {"bad dtype", R"({"w":{"dtype":"F8","shape":[4],"data_offsets":[0,4]}})", b16,
       {"'w'", "unknown dtype 'F8'", "BF16"}},
      {"dtype not string", R"({"w":{"dtype":4,"shape":[4],"data_offsets":[0,16]}})", b16,
       {"'w'", "dtype must be a string"}},
      {"negative dim", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,16]}})", b16,
       {"'w'", "non-negative integers", "[-1]"}},
      {"float dim", R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", b16,
       {"'w'", "non-negative integers"}},
      {"shape not list", R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", b16,
       {"'w'", "shape must be a list"}},
      {"missing offsets", R"({"w":{"dtype":"F32","shape":[4]}})", b16,
       {"'w'", "missing \"data_offsets\""}},
      {"offsets malformed", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16]}})", b16,
       {"'w'", "data_offsets must be [begin, end]", "[16]"}},
      {"end before begin", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", b16,
       {"'w'", "[8, 4]", "end < begin"}},
      {"out of range", R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", b16,
       {"'w'", "[0, 32]", "past the end of the data buffer (16 bytes)"}},
      {"size mismatch", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", b16,
       {"'w'", "size mismatch", "[2] of F32 needs 8 bytes", "span 12"}},
      {"overflowing shape",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", b16,
       {"'w'", "overflows"}},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       b16, {"'a' [0, 12)", "'b' [8, 16)", "overlap"}},
      {"duplicate name",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       b16, {"'a'", "twice"}},
      {"metadata value", R"({"__metadata__":{"k":1}})", "", {"__metadata__ 'k'", "string"}},
      {"entry not object", R"({"w":[1]})", "", {"'w'", "expected an object"}},
  };
  const std::string f = path("bad.safetensors");
  for (const CorruptCase& c : cases) {
    SCOPED_TRACE(c.what);
    write_raw(f, make_file(c.header, c.buffer));
    std::string msg = error_of([&] { SafetensorsFile::open(f); });
    EXPECT_THAT(msg, HasSubstr(f));
    for (const std::string& part : c.expected) EXPECT_THAT(msg, HasSubstr(part));
  }
}

TEST_F(SafetensorsCorruptTest, HolesAndTrailingBytesAreAccepted) {
  std::string buffer(40, '\0');
  float one = 1, two = 2;
  std::memcpy(&buffer[0], &one, 4);
  std::memcpy(&buffer[16], &two, 4);
  const std::string f = path("holes.safetensors");
  write_raw(f, make_file(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                         R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("z":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})",
                         buffer));
  SafetensorsFile st = SafetensorsFile::open(f);
  EXPECT_EQ(st.read_f32("a"), std::vector<float>{1});
  EXPECT_EQ(st.read_f32("b"), std::vector<float>{2});
  EXPECT_TRUE(st.read_f32("z").empty());
  EXPECT_EQ(st.tensors()[0].name, "b");
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

using SafetensorsShardTest = TempDirTest;

struct OwnedTensor {
  std::string name;
  std::vector<float> values;
  std::vector<int64_t> shape;
};

std::vector<OwnedTensor> sample_model() {
  std::vector<OwnedTensor> t = {{"embed.weight", {}, {16, 8}},   {"h.0.attn.weight", {}, {8, 8}},
                                {"h.0.mlp.weight", {}, {32, 8}}, {"h.0.norm.weight", {}, {8}},
                                {"h.1.mlp.weight", {}, {32, 8}}, {"lm_head.weight", {}, {16, 8}}};
  float v = 0;
  for (OwnedTensor& x : t) {
    int64_t n = 1;
    for (int64_t d : x.shape) n *= d;
    for (int64_t i = 0; i < n; ++i) x.values.push_back(v += 0.25f);
  }
  return t;
}

std::vector<TensorRef> refs_of(const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorRef> refs;
  for (const OwnedTensor& t : tensors) {
    refs.push_back({t.name, DType::F32, t.shape, t.values.data(), t.values.size() * 4});
  }
  return refs;
}

void expect_model_equals(const SafetensorsModel& m, const std::vector<OwnedTensor>& tensors) {
  ASSERT_EQ(m.tensors().size(), tensors.size());
  for (const OwnedTensor& t : tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(m.get(t.name).shape, t.shape);
    EXPECT_EQ(m.read_f32(t.name), t.values);
  }
}

TEST_F(SafetensorsShardTest, ShardsIndexAndReadBack) {
  const auto model = sample_model();  // 512 + 256 + 1024 + 32 + 1024 + 512 bytes
  auto written = write_safetensors_sharded(dir_, refs_of(model), 1100, {{"format", "pt"}});
  // Greedy: [embed, attn] 768 | [mlp0, norm] 1056 | [mlp1] 1024 | [lm_head] 512.
  EXPECT_EQ(written, (std::vector<std::string>{
                         "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                         "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors",
                         "model.safetensors.index.json"}));
  EXPECT_EQ(listing(), (std::vector<std::string>{written[0], written[1], written[2], written[3],
                                                 written[4]}));
  auto index = nlohmann::json::parse(read_file_text(path("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 3360);
  EXPECT_EQ(index["weight_map"]["h.0.norm.weight"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00004-of-00004.safetensors");
  EXPECT_EQ(SafetensorsFile::open(path(written[2])).metadata().at("format"), "pt");

  SafetensorsModel m = SafetensorsModel::open(dir_);
  EXPECT_EQ(m.shards().size(), 4u);
  EXPECT_EQ(m.path(), path("model.safetensors.index.json"));
  expect_model_equals(m, model);
  expect_model_equals(SafetensorsModel::open(path("model.safetensors.index.json")), model);
  EXPECT_THAT(error_of([&] { m.get("nope"); }),
              AllOf(HasSubstr("index.json"), HasSubstr("'nope'")));
}

TEST_F(SafetensorsShardTest, ResaveReplacesStaleFiles) {
  const auto model = sample_model();
  write_safetensors_sharded(dir_, refs_of(model), 1100, {});
  write_raw(path("config.json"), "{}");  // not ours: must survive every save

  // Everything fits: one file, no index, old shards gone.
  auto written = write_safetensors_sharded(dir_, refs_of(model), 1 << 20, {});
  EXPECT_EQ(written, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(listing(), (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(SafetensorsFile::open(path("model.safetensors")).metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}}));  // transformers needs it
  expect_model_equals(SafetensorsModel::open(dir_), model);

  // Back to shards (a tensor larger than the limit gets a shard of its own): single file gone.
  written = write_safetensors_sharded(dir_, refs_of(model), 800, {});
  EXPECT_EQ(written.size(), 6u);  // 5 shards + index
  EXPECT_EQ(written[0], "model-00001-of-00005.safetensors");
  EXPECT_FALSE(file_exists(path("model.safetensors")));
  EXPECT_TRUE(file_exists(path("config.json")));
  expect_model_equals(SafetensorsModel::open(dir_), model);
}

TEST_F(SafetensorsShardTest, BrokenIndexesAreClearErrors) {
  const auto model = sample_model();
  write_safetensors_sharded(dir_, refs_of(model), 1100, {});
  const std::string index = path("model.safetensors.index.json");
  const std::string good_index = read_file_text(index);

  // An index naming a shard that is not there.
  auto j = nlohmann::json::parse(good_index);
  j["weight_map"]["lm_head.weight"] = "model-00009-of-00009.safetensors";
  write_raw(index, j.dump());
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr(index), HasSubstr("model-00009-of-00009.safetensors"),
                    HasSubstr("No such file")));

  // A tensor the index puts in a shard that does not hold it.
  j = nlohmann::json::parse(good_index);
  j["weight_map"]["ghost.weight"] = "model-00001-of-00004.safetensors";
  write_raw(index, j.dump());
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr(index), HasSubstr("'ghost.weight'"),
                    HasSubstr("model-00001-of-00004.safetensors")));

  // A path instead of a file name.
  j = nlohmann::json::parse(good_index);
  j["weight_map"]["lm_head.weight"] = "../elsewhere.safetensors";
  write_raw(index, j.dump());
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr(index), HasSubstr("not a file beside the index")));

  write_raw(index, "{\"weight_map\": ");
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr(index), HasSubstr("not valid JSON")));

  fs::remove(index);
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr(dir_), HasSubstr("no model.safetensors")));
}

TEST_F(SafetensorsShardTest, ShardFromAnotherSaveIsDetected) {
  // What a crash while overwriting same-named shards leaves: shard 1 from one save, the index
  // and other shards from another.
  auto model = sample_model();
  write_safetensors_sharded(dir_, refs_of(model), 1100, {});
  fs::copy_file(path("model-00001-of-00004.safetensors"), path("old-shard"));
  model[0].values[0] = 42;
  write_safetensors_sharded(dir_, refs_of(model), 1100, {});
  expect_model_equals(SafetensorsModel::open(dir_), model);
  fs::copy_file(path("old-shard"), path("model-00001-of-00004.safetensors"),
                fs::copy_options::overwrite_existing);
  EXPECT_THAT(error_of([&] { SafetensorsModel::open(dir_); }),
              AllOf(HasSubstr("model-00001-of-00004.safetensors"), HasSubstr("different save")));
}

// ---------------------------------------------------------------------------------------------
// dtype conversions

// Exact value of a binary16, computed from the definition rather than by bit manipulation.
double f16_reference(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }
float from_bits(uint32_t b) { return std::bit_cast<float>(b); }

TEST(DTypeTest, NamesAndSizes) {
  for (DType d : kAllDTypes) EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  EXPECT_STREQ(dtype_name(DType::BF16), "BF16");
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::U64), 8u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  EXPECT_FALSE(dtype_from_name("f32"));
  EXPECT_FALSE(dtype_from_name("F8_E4M3"));
  EXPECT_FALSE(dtype_from_name(""));
}

TEST(DTypeTest, F16ToF32IsExactForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (((h >> 10) & 31) == 31) {
      if (h & 1023) {
        ASSERT_TRUE(std::isnan(f)) << h;
      } else {
        ASSERT_EQ(f, (h & 0x8000) ? -INFINITY : INFINITY) << h;
      }
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), f16_reference(static_cast<uint16_t>(h))) << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    ASSERT_EQ(f32_to_f16(f), h) << h;  // every half survives the round trip
  }
}

TEST(DTypeTest, F32ToF16EdgeCases) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);      // max half
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);    // just under the midpoint to inf
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);      // midpoint ties to even = inf
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);       // tie between 1 and 1+2^-10 -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);   // tie -> even (up)
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);  // just above the tie
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);  // tie between 0 and 2^-24 -> even (0)
  EXPECT_EQ(f32_to_f16(-0x1p-25f), 0x8000);
  EXPECT_EQ(f32_to_f16(0x1.000002p-25f), 0x0001);  // just above that tie
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);     // tie between 1 and 2 ulps -> even
  EXPECT_EQ(f32_to_f16(0x1.ff8p-15f), 0x03ff);     // largest subnormal
  EXPECT_EQ(f32_to_f16(0x1.ffcp-15f), 0x0400);     // + half ulp: tie -> even = smallest normal
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7fa00000u}) {
    uint16_t h = f32_to_f16(from_bits(nan));
    EXPECT_EQ(h & 0x7c00, 0x7c00) << std::hex << nan;
    EXPECT_NE(h & 0x03ff, 0) << std::hex << nan;  // NaN, not inf
    EXPECT_EQ(h >> 15, nan >> 31);
  }
  // Every midpoint between adjacent positive halves rounds to the even one; one float ulp either
  // side rounds to the nearer one.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double lo = f16_reference(static_cast<uint16_t>(h));
    const double hi = h + 1 == 0x7c00 ? 65536.0 : f16_reference(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact in fp32
    const uint32_t even = (h & 1) ? h + 1 : h;
    ASSERT_EQ(f32_to_f16(mid), even) << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << h;
    ASSERT_EQ(f32_to_f16(std::nextafter(mid, INFINITY)), h + 1) << h;
  }
}

#if defined(__FLT16_MAX__)
// The compiler's own _Float16 conversion (IEEE, round to nearest even) as an independent oracle.
TEST(DTypeTest, F32ToF16MatchesCompilerFloat16) {
  for (uint64_t b = 0; b <= 0xffffffffu; b += 251) {
    const float f = from_bits(static_cast<uint32_t>(b));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    ASSERT_EQ(f32_to_f16(f), std::bit_cast<uint16_t>(h)) << std::hex << b;
  }
}
#endif

TEST(DTypeTest, Bf16EdgeCases) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);             // tie -> even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);         // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // above the tie
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds past bf16 max
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7f7fffu)), 0x7f7f);             // bf16 max stays finite
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(from_bits(0x00008000u)), 0x0000);  // subnormal tie -> even
  EXPECT_EQ(f32_to_bf16(from_bits(0x00018000u)), 0x0002);
  EXPECT_EQ(f32_to_bf16(from_bits(0x00010000u)), 0x0001);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7fc00000u)), 0x7fc0);
  EXPECT_EQ(f32_to_bf16(from_bits(0xffc00000u)), 0xffc0);  // sign kept
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001u)))));  // low payload
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7fffffffu)))));  // would carry
  EXPECT_EQ(bits(bf16_to_f32(0x4049)), 0x40490000u);
  // Exhaustive over bf16: widening then narrowing is the identity; midpoints go to the even one.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), h) << h;
    if ((h & 0x7fff) >= 0x7f80) continue;
    const uint32_t mid = (h << 16) | 0x8000u;  // halfway to the next bf16 away from zero
    ASSERT_EQ(f32_to_bf16(from_bits(mid)), (h & 1) ? h + 1 : h) << h;
    ASSERT_EQ(f32_to_bf16(from_bits(mid - 1)), h) << h;
    ASSERT_EQ(f32_to_bf16(from_bits(mid + 1)), h + 1) << h;
  }
}

TEST(DTypeTest, ConvertToF32EveryDtypeUnaligned) {
  // Stored one byte past an aligned address: safetensors data need not be aligned.
  auto check = [](DType d, auto... values) {
    using T = std::common_type_t<decltype(values)...>;
    const T src[] = {values...};
    std::vector<uint8_t> buf(1 + sizeof src);
    std::memcpy(buf.data() + 1, src, sizeof src);
    std::vector<float> out(sizeof...(values));
    convert_to_f32(out.data(), buf.data() + 1, d, out.size());
    EXPECT_EQ(out, (std::vector<float>{static_cast<float>(values)...})) << dtype_name(d);
  };
  check(DType::U8, uint8_t{0}, uint8_t{255}, uint8_t{7});
  check(DType::I8, int8_t{-128}, int8_t{127}, int8_t{-1});
  check(DType::U16, uint16_t{65535}, uint16_t{1});
  check(DType::I16, int16_t{-32768}, int16_t{5});
  check(DType::U32, uint32_t{16777217}, uint32_t{3});  // 2^24+1 rounds to 2^24
  check(DType::I32, int32_t{-2147483647 - 1}, int32_t{9});
  check(DType::U64, uint64_t{1} << 40, uint64_t{2});
  check(DType::I64, int64_t{-5}, int64_t{1} << 50);
  check(DType::F32, 1.5f, -0.0f, 3e38f);
  check(DType::F64, 0.1, -2.0, 1e300);  // 1e300 -> inf
  const uint8_t bools[] = {0, 1, 2};
  std::vector<float> out(3);
  convert_to_f32(out.data(), bools, DType::BOOL, 3);
  EXPECT_EQ(out, (std::vector<float>{0, 1, 1}));
  const uint16_t halves[] = {0x3c00, 0xc000, 0x7bff};
  convert_to_f32(out.data(), halves, DType::F16, 3);
  EXPECT_EQ(out, (std::vector<float>{1, -2, 65504}));
  const uint16_t brains[] = {0x3f80, 0xc000, 0x4049};
  convert_to_f32(out.data(), brains, DType::BF16, 3);
  EXPECT_EQ(out, (std::vector<float>{1, -2, 3.140625f}));
}

TEST(DTypeTest, ConvertFromF32) {
  const float src[] = {1.0f, -2.0f, 0.1f};
  uint8_t buf[1 + 3 * 8];
  convert_from_f32(buf + 1, DType::F16, src, 3);
  uint16_t h[3];
  std::memcpy(h, buf + 1, sizeof h);
  EXPECT_EQ(h[0], 0x3c00);
  EXPECT_EQ(h[1], 0xc000);
  EXPECT_EQ(h[2], 0x2e66);  // 0.1 -> 0.0999755859375
  convert_from_f32(buf + 1, DType::BF16, src, 3);
  std::memcpy(h, buf + 1, sizeof h);
  EXPECT_EQ(h[2], 0x3dcd);  // 0.1f = 0x3dcccccd rounds up
  convert_from_f32(buf + 1, DType::F64, src, 3);
  double d[3];
  std::memcpy(d, buf + 1, sizeof d);
  EXPECT_EQ(d[2], static_cast<double>(0.1f));
  EXPECT_THAT(error_of([&] { convert_from_f32(buf, DType::I32, src, 3); }),
              AllOf(HasSubstr("I32"), HasSubstr("convert_from_f32")));
}

// ---------------------------------------------------------------------------------------------
// MappedFile and atomic writes

using FileTest = TempDirTest;

TEST_F(FileTest, MappedFileBasics) {
  write_raw(path("empty"), "");
  MappedFile empty = MappedFile::open(path("empty"));
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.path(), path("empty"));

  write_raw(path("abc"), "abc");
  MappedFile a = MappedFile::open(path("abc"));
  const uint8_t* p = a.data();
  MappedFile b = std::move(a);
  EXPECT_EQ(b.data(), p);  // moving keeps the mapping where it is
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), "abc");

  EXPECT_THAT(error_of([&] { MappedFile::open(path("nope")); }),
              AllOf(HasSubstr(path("nope")), HasSubstr("No such file or directory")));
  EXPECT_THAT(error_of([&] { MappedFile::open(dir_); }),
              AllOf(HasSubstr(dir_), HasSubstr("not a regular file")));
}

TEST_F(FileTest, AtomicWriteReplacesAndReads) {
  const std::string f = path("out.txt");
  write_file_atomic(f, "hello", 5);
  EXPECT_EQ(read_file_text(f), "hello");
  write_file_atomic(f, [](std::FILE* fp) { std::fputs("second", fp); });
  EXPECT_EQ(read_file_text(f), "second");
  EXPECT_EQ(listing(), std::vector<std::string>{"out.txt"});  // no temporaries left
  EXPECT_TRUE(file_exists(f));
  EXPECT_FALSE(file_exists(path("nope")));
  EXPECT_THAT(error_of([&] { read_file_text(path("nope")); }),
              AllOf(HasSubstr(path("nope")), HasSubstr("No such file")));
  EXPECT_THAT(error_of([&] { write_file_atomic(path("no/dir/x"), "x", 1); }),
              AllOf(HasSubstr(path("no/dir/x")), HasSubstr("No such file")));
  EXPECT_NO_THROW(fsync_dir(dir_));
}

TEST_F(FileTest, PreviousFileSurvivesThrowingWriter) {
  const std::string f = path("model.safetensors");
  write_file_atomic(f, "old", 3);
  EXPECT_THROW(write_file_atomic(f,
                                 [](std::FILE* fp) {
                                   std::fputs("half of the new conte", fp);
                                   throw std::runtime_error("writer gave up");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_file_text(f), "old");
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(FileTest, PreviousFileSurvivesKill9MidWrite) {
  const std::string f = path("state.bin");
  write_file_atomic(f, "old", 3);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    write_file_atomic(f, [](std::FILE* fp) {
      std::string half(1 << 20, 'n');
      std::fwrite(half.data(), 1, half.size(), fp);
      std::fflush(fp);
      ::raise(SIGKILL);
    });
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_EQ(read_file_text(f), "old");
}

TEST_F(FileTest, WriteFailureNamesPathAndRemovesTemp) {
  // A file-size limit makes writes fail with EFBIG, standing in for a full disk.
  const std::string f = path("big.bin");
  write_file_atomic(f, "old", 3);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::vector<char> big(1 << 20, 'x');
  std::string msg = error_of([&] { write_file_atomic(f, big.data(), big.size()); });
  std::string msg_buffered = error_of([&] {
    write_file_atomic(f, [](std::FILE* fp) {
      for (int i = 0; i < 10000; ++i) std::fputs("0123456789", fp);  // errors surface at flush
    });
  });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_THAT(msg, AllOf(HasSubstr(f), HasSubstr("File too large")));
  EXPECT_THAT(msg_buffered, AllOf(HasSubstr(f), HasSubstr("File too large")));
  EXPECT_EQ(read_file_text(f), "old");
  EXPECT_EQ(listing(), std::vector<std::string>{"big.bin"});
}

}  // namespace
