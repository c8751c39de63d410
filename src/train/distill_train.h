// `distill train`: train a student on a teacher's distribution with the KD losses of
// distill/losses.h, online (the frozen teacher computes dense logits for every batch) or offline
// (top-k teacher log-probabilities from a dataset written by `distill generate` / `score`).
// The student starts from a config or preset, from a checkpoint, or from a subset of the
// teacher's own layers (DistilBERT-style). Shares the loop of train/train_loop.h.
#pragma once
#include <string>
#include <vector>

#include "kernels/qmatmul.h"
#include "train/train_loop.h"

namespace distill {

struct DistillTrainOptions {
  std::string teacher;             // teacher model directory (online mode, --init-from-teacher)
  WeightType teacher_weights = WeightType::F32;  // its linear layers (kernels/qmatmul.h)
  std::vector<std::string> data;   // online: text files (in the teacher's tokens)
  double val_fraction = 0.05;      // held out: tail of each file (online), last records (offline)
  std::string dataset;             // offline: dataset directory (top-k teacher log-probs)
  std::string student_config;      // HF config.json of a fresh student
  std::string student_preset;      // or a built-in shape
  std::string init_from;           // or a checkpoint directory to start from
  bool init_from_teacher = false;  // or the teacher's layers listed in keep_layers
  std::string keep_layers;         // "0,2,4": teacher layers the student keeps, in order
  std::string loss = "kl";         // e.g. "kl=0.5,ce=0.5" (see KdLossSpec::parse)
  float temperature = 1.0f;        // T (KD terms are scaled by T^2)
  std::string tail = "bucket";     // sparse teachers: bucket | ignore
  // On-policy distillation (online; GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024): each
  // micro-batch is, with probability on_policy_fraction, the student's own text: the student
  // completes the first prompt_tokens of each window by sampling (KV-cache engine, seeded from
  // the run's data RNG) and the loss applies to the completion only; otherwise the windows are
  // the corpus text (supervised KD on every position).
  float on_policy_fraction = 0.0f;
  int prompt_tokens = 0;            // on-policy prompt length (0: seq_len / 2)
  float sample_temperature = 1.0f;  // the student's sampling temperature
  // Hidden-state distillation (online): adds hidden_weight x the mean over the layer map's pairs
  // of a loss between student and teacher hidden states (distill/hidden_loss.h), through a
  // learned projection per pair when the widths differ (trained with Adam at --lr, saved in
  // checkpoints).
  std::string hidden_loss;             // "" (none) | mse | cosine
  float hidden_weight = 1.0f;
  std::string layer_map = "uniform";   // "uniform" or "s:t,..." student:teacher boundaries
  // Attention-map distillation (online): adds attention_weight x the mean over the pairs of
  // KL(teacher || student) between head-averaged attention maps (distill/hidden_loss.h).
  std::string attention_loss;          // "" (none) | kl
  float attention_weight = 1.0f;
  std::string attention_layers = "last";  // "last" or "s:t,..." student:teacher layers
  // Online distillation from a teacher behind an OpenAI-compatible endpoint that returns prompt
  // log-probabilities (echo + logprobs; harvest/api_teacher.h) instead of --teacher: sparse
  // top-k losses on the corpus windows and on the student's own samples. The student's tokenizer
  // (--init-from's, or bytes) must be the endpoint's.
  std::string teacher_endpoint;
  std::string teacher_model = "teacher";
  std::string teacher_api_key_env = "OPENAI_API_KEY";
  int teacher_top_logprobs = 20;
  int teacher_concurrency = 4;
  // A student vocabulary other than the teacher's: a tokenizer file, a model directory, or
  // "byte" (online only; losses uld / xkl / ce, see train/cross_tokenizer_task.h).
  std::string student_tokenizer;
  TrainLoopOptions loop;
};

void distill_train(const DistillTrainOptions& options, const ProgressFn& on_progress);
// What distill_train(options) would need in memory (loads the teacher and data; trains nothing,
// writes nothing).
MemoryEstimate distill_train_memory_estimate(const DistillTrainOptions& options);

// The tokenizer fingerprint recorded with a model directory ("" when unknown): the
// distill_tokenizer metadata of its weights.
std::string model_tokenizer_fingerprint(const std::string& dir);

// A student config that keeps the listed layers of the teacher, and the weights copied over.
ModelConfig config_keeping_layers(const ModelConfig& teacher, const std::vector<int>& layers);
void copy_kept_layers(const Model& teacher, Model& student, const std::vector<int>& layers);
std::vector<int> parse_layer_list(const std::string& text, int num_layers);

}  // namespace distill
