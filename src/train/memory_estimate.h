// The memory a training run will need, estimated before it starts (`distill pretrain --dry-run`,
// `distill train --dry-run`). Every figure is computed from what the code allocates, so that the
// estimate cannot drift from it: the arenas from the model's parameter count and FloatBuffer's
// rounding, the activations from the architecture's own buffer plan (training_buffer_floats in
// model/model.h), the task's own buffers from TrainTask::memory().
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace distill {

struct TrainLoopOptions;
class TrainTask;

// What a TrainTask holds beside the student, its optimizer and its activations, in bytes.
struct TaskMemory {
  int64_t teacher_weights = 0;      // a frozen teacher's parameter arena (it has no gradients)
  int64_t teacher_activations = 0;  // the teacher's forward buffers at (B,T)
  int64_t dlogits = 0;              // a (B,T,V) gradient buffer apart from the logits (0: in place)
  int64_t data = 0;                 // tokens and batches held in memory
};

struct MemoryEstimate {
  ModelConfig config;
  int B = 0, T = 0;  // B: the rows one process holds (its share under mpirun)
  int ranks = 1;
  bool checkpointing = false;
  bool bf16 = false;
  int64_t num_params = 0;
  // Bytes.
  int64_t params = 0, grads = 0;
  int64_t optimizer = 0;          // AdamW's two moments
  int64_t activations = 0;        // training buffers but the logits (backward scratch included)
  int64_t activations_other = 0;  // the same with checkpointing switched the other way
  int64_t logits = 0;             // (B,T,V): the student's logits, dlogits in place for pretrain
  TaskMemory task;
  int64_t scratch = 0;   // bf16 staging copies, checkpoint-save copies, per-step vectors
  int64_t baseline = 0;  // the process before training: code, libraries, oneDNN, thread stacks
  int64_t resume_load = 0;  // on resume: the checkpoint files mapped while they are read

  // Resident bytes at the fullest moment of the run.
  int64_t peak() const;
  // One line per figure, for printing.
  std::vector<std::string> lines() const;
};

// The estimated footprint of run_training(options, task) (the checkpoint's config on resume).
MemoryEstimate estimate_training_memory(const TrainLoopOptions& options, TrainTask& task);

// Bytes of a Model's parameter arena, and its gradient arena when trainable, for `config`.
int64_t model_arena_bytes(const ModelConfig& config, bool trainable);

// This process's peak resident set so far (getrusage ru_maxrss), in bytes.
int64_t peak_rss_bytes();

// "1.23 GiB", "45.6 MiB", "789 KiB".
std::string format_bytes(int64_t bytes);

}  // namespace distill
