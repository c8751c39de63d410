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

// Writes dir/teacher and returns its path. padded_vocab > 0: the model's vocabulary is that many
// ids, past the tokenizer's (as many HF checkpoints pad theirs), and the weights are scaled up so
// that the padding ids, which have no text, rank among the most likely ones.
inline std::string save_tiny_teacher(const std::filesystem::path& dir, uint64_t seed = 21,
                                     int padded_vocab = 0) {
  ModelConfig c = model_preset("gpt2-tiny");
  if (padded_vocab > 0) c.vocab_size = padded_vocab;
  Model m(c);
  m.init_weights(seed);
  if (padded_vocab > 0)
    for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 4.0f;
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir / "teacher").string(), o);
  return (dir / "teacher").string();
}

}  // namespace distill::test_support
