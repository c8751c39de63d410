// `distill prune`: a smaller student cut out of a teacher, Minitron-style (Muralidharan et al.
// 2024, "Compact Language Models via Pruning and Knowledge Distillation"): importance measured
// from activations on calibration text, then whole layers, attention heads (whole GQA groups),
// MLP channels and embedding channels removed, and every tensor sliced to match. Layer importance
// is ShortGPT's block influence (Men et al. 2024). The result is an ordinary model directory for
// `distill train --init-from` (pruning, then distillation).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/model.h"

namespace distill {

class TextCorpus;

struct PruneOptions {
  std::string teacher;             // teacher model directory
  std::vector<std::string> data;   // calibration text files (read in the teacher's tokens)
  int calib_tokens = 16384;        // calibration tokens (rounded up to whole windows)
  int seq_len = 128;               // tokens per calibration window
  int batch_size = 8;              // windows per forward pass
  uint64_t seed = 1234;            // which random windows of the text are read
  // Target shape; unset keeps the teacher's.
  std::optional<int> layers;       // keep this many layers (the highest block influence)
  std::string drop_layers;         // or drop exactly these ("3,4")
  std::optional<int> heads;        // attention heads per layer (a multiple of the GQA group)
  std::optional<int> ffn;          // MLP intermediate channels per layer
  std::optional<int> hidden;       // embedding channels (gpt2: heads * head_dim, see plan_pruning)
  std::string out;                 // output model directory
};

// Importance from calibration activations; larger means keep.
struct PruneImportance {
  int64_t tokens = 0;                        // calibration tokens measured
  // (L) block influence BI_l = 1 - mean over tokens of cos(h_l, h_{l+1}): layer l's input
  // against its output (ShortGPT eq. 1). 0: the layer is an identity.
  std::vector<double> block_influence;
  // (L, NH) a head's output before o_proj, as the root mean square over tokens of its L2 norm:
  // sqrt(mean_n ||o_{n,h}||^2) (Minitron sec. 2.2 with a mean over batch and sequence).
  std::vector<std::vector<double>> heads;
  std::vector<std::vector<double>> ffn;     // (L, F) mean |x| of the down projection's input
  // (C) mean |x| of the attention-norm and MLP-norm outputs, summed over layers.
  std::vector<double> hidden;
};

// What the student keeps of the teacher: teacher indices, increasing.
struct PrunePlan {
  std::vector<int> layers;                  // teacher layers kept
  std::vector<std::vector<int>> kv_heads;   // per kept layer: key/value heads (whole GQA groups)
  std::vector<std::vector<int>> ffn;        // per kept layer: MLP channels
  std::vector<int> hidden;                  // embedding channels
  ModelConfig config;                       // the student's
};

// Throws, naming the option, when the inputs are missing (--data, --out) or the target cannot be
// cut out of `teacher` (more heads than it has, heads not a multiple of the GQA group, zero
// layers, ...). Cheap: run it before calibration.
void check_prune_target(const ModelConfig& teacher, const PruneOptions& options);

// Forward passes of `teacher` over options.calib_tokens tokens of random windows of `corpus`
// (seeded); `progress(done, total)` after each batch, in tokens.
PruneImportance measure_importance(
    Model& teacher, const TextCorpus& corpus, const PruneOptions& options,
    const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

// The most important layers, heads (per layer), MLP channels (per layer) and embedding channels
// (globally) for the target shape. GPT-2's attention width is its n_embd, so there --heads H and
// --hidden H*head_dim are one choice: either implies the other, and both must agree.
PrunePlan plan_pruning(const ModelConfig& teacher, const PruneImportance& importance,
                       const PruneOptions& options);

// The student: the kept layers (config_keeping_layers / copy_kept_layers), then every tensor
// sliced by head, MLP channel and embedding channel. Inference-only.
std::unique_ptr<Model> apply_pruning(const Model& teacher, const PrunePlan& plan);

struct PruneResult {
  ModelConfig teacher, student;
  int64_t teacher_params = 0, student_params = 0;
  PruneImportance importance;
  PrunePlan plan;
};

// The whole verb: loads the teacher and the text, measures, plans, writes options.out (config.json,
// model.safetensors with the teacher's metadata, the teacher's tokenizer files, prune.json).
PruneResult prune(const PruneOptions& options,
                  const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

}  // namespace distill
