// `distill pretrain`: train a model from scratch on text files (byte-level tokens, or a BPE /
// SentencePiece tokenizer's), with held-out
// evaluation, metrics.jsonl, checkpoints and bit-identical resume (see train/train_loop.h).
#pragma once
#include <string>
#include <vector>

#include "train/train_loop.h"

namespace distill {

struct PretrainOptions {
  std::vector<std::string> data;     // text files (the corpus)
  std::string config;                // a HF config.json to train; empty: use `preset`
  std::string preset = "gpt2-tiny";  // built-in shape (see model/presets.cpp)
  double val_fraction = 0.05;        // tail of each file held out for evaluation
  // tokenizer.json / tokenizer.model or a directory holding one; empty: byte-level. A preset's
  // vocabulary becomes the tokenizer's; the saved model directories carry its files.
  std::string tokenizer;
  TrainLoopOptions loop;             // optimization, evaluation, checkpoints
};

void pretrain(const PretrainOptions& options, const ProgressFn& on_progress);
// What pretrain(options) would need in memory (loads the corpus; trains nothing, writes nothing).
MemoryEstimate pretrain_memory_estimate(const PretrainOptions& options);

}  // namespace distill
