// A small byte-level teacher (gpt2-tiny, random weights) saved as a model directory, for the tests
// that score, generate or distill from a teacher on disk.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "formats/model_dir.h"
#include "model/model.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill::test_support {

// Writes dir/teacher and returns its path.
inline std::string save_tiny_teacher(const std::filesystem::path& dir, uint64_t seed = 21) {
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(seed);
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir / "teacher").string(), o);
  return (dir / "teacher").string();
}

}  // namespace distill::test_support
