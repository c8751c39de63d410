// Training checkpoints: a model directory (config.json + model.safetensors, loadable by
// transformers) plus the state needed to continue bit-identically: AdamW moments
// (optimizer.safetensors) and trainer_state.json (step, RNG words, counters, options).
//
// Layout under a run directory:
//   checkpoints/step-00000200/{config.json, model.safetensors, optimizer.safetensors,
//                              trainer_state.json}
//   checkpoints/latest        text file naming the newest complete checkpoint
// A checkpoint is written into a temporary directory, every file fsynced, then renamed into
// place, and only then is `latest` replaced (atomically): a kill -9 at any moment leaves the
// previous checkpoint intact and `latest` naming a complete one.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "formats/model_dir.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace distill {

// A tensor a training task trains or carries besides the model (e.g. the learned projection of
// hidden-state distillation, with its optimizer moments), saved in each checkpoint's
// task_state.safetensors and restored on resume.
struct StateTensor {
  std::string name;
  float* data = nullptr;
  size_t numel = 0;
};

struct TrainerState {
  int64_t step = 0;            // optimizer steps completed
  uint64_t rng[4] = {};        // data-sampling RNG words after `step` steps
  int64_t tokens_seen = 0;
  double elapsed_s = 0.0;      // training time before this run (for throughput and ETA)
  nlohmann::json extra;        // the run's options, for checking a resume uses the same ones
};

// Writes checkpoints/step-<step>/ under run_dir, updates `latest`, and deletes older
// checkpoints beyond `keep` (keep <= 0 keeps all). Returns the checkpoint directory, which is a
// model directory too (`save` as for the final model: its tokenizer metadata included).
std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainerState& state, int keep,
                            const SaveModelOptions& save = {},
                            const std::vector<StateTensor>& task_state = {});

// The newest complete checkpoint directory of run_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Restores parameters, moments and state. The model must have been built from the
// checkpoint's config (ModelConfig::from_file(dir + "/config.json")).
void load_checkpoint(const std::string& dir, Model& model, AdamW& optimizer, TrainerState& state);
// Restores a task's tensors from dir/task_state.safetensors; every one must be there with its
// size (a checkpoint of another task is an error naming the tensor).
void load_task_state(const std::string& dir, const std::vector<StateTensor>& task_state);

}  // namespace distill
