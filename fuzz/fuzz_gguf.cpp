// libFuzzer target: GgufFile::open on arbitrary bytes, then every typed accessor on every value,
// read_f32 on every (small) tensor, load_gguf_model (config from metadata, tensor checks,
// dequantization, the q/k permutation), and the vocabulary read back and written as tokenizer
// files (gguf_import_vocab.h). Anything but a distill::Error is a finding.
#include <cstdint>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/gguf_import.h"
#include "formats/gguf_import_vocab.h"
#include "fuzz_input_file.h"

using namespace distill;

namespace {
void touch(const GgufValue& v, const std::string& key) {
  try { v.as_int(key); } catch (const Error&) {}
  try { v.as_float(key); } catch (const Error&) {}
  try { v.as_bool(key); } catch (const Error&) {}
  try { v.as_string(key); } catch (const Error&) {}
  try { v.as_strings(key); } catch (const Error&) {}
  try { v.as_floats(key); } catch (const Error&) {}
  try { v.as_ints(key); } catch (const Error&) {}
  for (const GgufValue& e : v.array) touch(e, key);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "input.gguf");
  try {
    const GgufFile f = GgufFile::open(path);
    for (const auto& [key, value] : f.metadata()) touch(value, key);
    for (const GgufTensorInfo& t : f.tensors()) {
      if (t.numel() > (int64_t(1) << 20)) continue;
      try {
        const std::vector<float> x = f.read_f32(t);
        if (x.size() != size_t(t.numel())) __builtin_trap();
      } catch (const Error&) {
      }
    }
    try {
      load_gguf_model(f);
    } catch (const Error&) {
    }
    try {
      const std::string dir = path + ".tokenizer";
      std::filesystem::create_directories(dir);
      write_tokenizer_files(gguf_vocab_read(f), dir, 64);
    } catch (const Error&) {
    }
  } catch (const Error&) {
  }
  return 0;
}
