// The training loop shared by `distill pretrain` and `distill train` (distillation): AdamW,
// schedule, clipping, gradient accumulation, held-out evaluation, metrics.jsonl, atomic
// checkpoints and bit-identical resume. What is trained on, and with which loss, is a TrainTask.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/memory_estimate.h"

namespace distill {

struct TrainLoopOptions {
  std::string out = "runs/train";     // run directory: metrics.jsonl, checkpoints/, model/
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
  int eval_every = 100;               // steps between held-out evaluations (0: only at the end)
  int eval_batches = 8;               // held-out batches per evaluation
  int save_every = 250;               // steps between checkpoints (0: only at the end)
  int keep_checkpoints = 2;           // newest checkpoints kept
  uint64_t seed = 1337;               // initialisation and data order
  bool resume = false;                // continue from the run directory's latest checkpoint
  std::string precision = "f32";      // f32 | bf16 (matmul inputs; master weights stay fp32)
  int stop_after = 0;                 // stop (with a checkpoint) after this many steps of this
                                      // invocation; 0: run to `steps` (for tests and scheduling)
  // Early stopping: the run's model/ holds the weights of the evaluation with the lowest held-out
  // loss (rewritten at each new best), not those of the last step.
  bool keep_best = false;
  int patience = 0;  // with keep_best: stop after this many evaluations without a new best
                     // (0: train all `steps`)
  // Activation checkpointing (Model::set_checkpointing): backward recomputes each layer's
  // activations from its input; the same losses and weights with less memory, more compute.
  bool checkpoint_activations = false;
};

struct TrainProgress {
  enum class Kind { Step, Checkpoint, Resumed, NewBest, EarlyStop, Done } kind = Kind::Step;
  int64_t step = 0, total_steps = 0;
  float loss = 0.0f, lr = 0.0f, grad_norm = 0.0f;
  std::optional<float> val_loss;
  nlohmann::json details;  // task-specific numbers of this step (e.g. loss terms)
  double tokens_per_s = 0.0, elapsed_s = 0.0, eta_s = 0.0;
  int64_t num_params = 0;
  std::string path;  // checkpoint or final model directory
  int64_t best_step = 0;  // keep_best: the step whose weights model/ holds (NewBest, Done)
};
using ProgressFn = std::function<void(const TrainProgress&)>;

struct StepResult {
  double loss = 0.0;       // the step's mean loss
  int64_t tokens = 0;      // tokens processed
  nlohmann::json details;  // logged to metrics.jsonl with the step
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;
  // The config of a fresh model (not called on resume: the checkpoint has it).
  virtual ModelConfig model_config() = 0;
  // Called once the model is built (fresh or resumed), before init_model or a checkpoint load:
  // where a task sizes what it trains besides the model (state_tensors()).
  virtual void attach(const Model& model) { (void)model; }
  // Initial weights of a fresh model (random, a checkpoint, the teacher's layers...).
  virtual void init_model(Model& model, uint64_t seed) = 0;
  // What the task trains or carries besides the model, saved with every checkpoint and restored
  // on resume (train/checkpoint.h).
  virtual std::vector<StateTensor> state_tensors() { return {}; }
  // One optimizer step's forward/backward: accumulate gradients into model.grads() (zeroed by
  // the loop) for grad_accum micro-batches drawn with `rng`.
  virtual StepResult step(Model& model, Rng& rng) = 0;
  // Held-out loss (deterministic, no gradients).
  virtual float evaluate(Model& model) = 0;
  // Options that must not change across a resume.
  virtual nlohmann::json identity() const = 0;
  // safetensors __metadata__ for the saved model (e.g. the tokenizer's fingerprint).
  virtual std::map<std::string, std::string> model_metadata() const { return {}; }
  // Files every saved model directory carries (the tokenizer of a non-byte-level model).
  virtual std::vector<std::string> model_files() const { return {}; }
  // What the task itself holds while training (see train/memory_estimate.h).
  virtual TaskMemory memory() const { return {}; }
};

// Every saved model directory's safetensors __metadata__ says which weights it holds:
// "distill.step" (optimizer steps), "distill.total_steps", "distill.val_loss" (held-out loss at
// that step, when evaluated) and "distill.selection": "last" or "best held-out loss".
void run_training(const TrainLoopOptions& options, TrainTask& task, const ProgressFn& on_progress);

}  // namespace distill
