// `distill pretrain`: train a model from scratch on text files (byte-level tokens), with held-out
// evaluation, metrics.jsonl, checkpoints and bit-identical resume.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace distill {

struct PretrainOptions {
  std::vector<std::string> data;      // text files (the corpus)
  std::string out = "runs/pretrain";  // run directory: metrics.jsonl, checkpoints/, model/
  std::string config;                 // a HF config.json to train; empty: use `preset`
  std::string preset = "gpt2-tiny";   // built-in shape (see model/presets.cpp)
  int seq_len = 128;                  // T: tokens per training window
  int batch_size = 16;                // B: windows per micro-batch
  int grad_accum = 1;                 // micro-batches per optimizer step
  int steps = 1000;                   // optimizer steps in total
  float lr = 1e-3f;                   // peak learning rate
  float min_lr = 1e-4f;               // final learning rate (cosine, wsd)
  int warmup = 50;                    // linear warmup steps
  std::string schedule = "cosine";    // constant | cosine | wsd
  float decay_fraction = 0.2f;        // wsd: share of steps spent decaying
  float weight_decay = 0.1f;          // AdamW, matrices only
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;             // global-norm clip; 0 disables
  double val_fraction = 0.05;         // tail of each file held out for evaluation
  int eval_every = 100;               // steps between held-out evaluations (0: only at the end)
  int eval_batches = 8;               // held-out batches per evaluation
  int save_every = 250;               // steps between checkpoints (0: only at the end)
  int keep_checkpoints = 2;           // newest checkpoints kept
  uint64_t seed = 1337;               // initialisation and data order
  bool resume = false;                // continue from the run directory's latest checkpoint
  std::string precision = "f32";      // f32 | bf16 (matmul inputs; master weights stay fp32)
  int stop_after = 0;                 // stop (with a checkpoint) after this many steps of this
                                      // invocation; 0: run to `steps` (for tests and scheduling)
};

struct PretrainProgress {
  enum class Kind { Step, Eval, Checkpoint, Resumed, Done } kind = Kind::Step;
  int64_t step = 0, total_steps = 0;
  float loss = 0.0f, lr = 0.0f, grad_norm = 0.0f;
  std::optional<float> val_loss;
  double tokens_per_s = 0.0, elapsed_s = 0.0, eta_s = 0.0;
  int64_t num_params = 0;
  std::string path;  // checkpoint or final model directory
};

// Runs the training. Progress is reported through `on_progress` (the library never prints).
void pretrain(const PretrainOptions& options,
              const std::function<void(const PretrainProgress&)>& on_progress);

}  // namespace distill
