// A pretraining corpus: text files read whole, split into a training part and a held-out tail
// (the last val_fraction of every file's bytes), tokenized (bytes, or the given tokenizer) and
// sampled as random windows of T+1 tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"

namespace distill {

class Tokenizer;

class TextCorpus {
 public:
  // Errors name the file: missing, unreadable, or too short for one window of `min_window`.
  // `tokenizer` null: byte-level ids; otherwise its ids (no special tokens added or parsed).
  static TextCorpus load(const std::vector<std::string>& paths, double val_fraction,
                         int min_window, const Tokenizer* tokenizer = nullptr);

  size_t train_tokens() const { return train_.size(); }
  size_t val_tokens() const { return val_.size(); }

  // B random windows of the training split: ids (B,T) and targets (B,T) = ids shifted by one.
  // Draws B numbers from rng.
  void sample_train(Rng& rng, int B, int T, int32_t* ids, int32_t* targets) const;
  // Held-out batch `index` of a fixed, evenly spaced set of windows (same on every call).
  void val_batch(int index, int num_batches, int B, int T, int32_t* ids, int32_t* targets) const;

 private:
  std::vector<int32_t> train_, val_;
};

}  // namespace distill
