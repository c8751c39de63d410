// libFuzzer target: SafetensorsFile::open on arbitrary bytes (the u64 header length, the JSON
// header, offsets against the buffer), then metadata and read_f32 of every (small) tensor.
// Anything but a distill::Error is a finding.
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors.h"
#include "fuzz_input_file.h"

using namespace distill;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "input.safetensors");
  try {
    const SafetensorsFile f = SafetensorsFile::open(path);
    for (const TensorInfo& t : f.tensors()) {
      if (t.numel() > (int64_t(1) << 20)) continue;
      const std::vector<float> x = f.read_f32(t.name);
      if (x.size() != size_t(t.numel())) __builtin_trap();
      if (&f.get(t.name) != f.find(t.name)) __builtin_trap();
    }
  } catch (const Error&) {
  }
  return 0;
}
