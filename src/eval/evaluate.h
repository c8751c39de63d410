// `distill eval` without the printing: evaluates a teacher, a student and baselines on held-out
// text (perplexity, KL to the teacher, top-1 agreement), on a task file (exact match, contains)
// and for cost (size, speed, memory), and reads training curves, into an EvalReport.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/cost.h"
#include "eval/report.h"

namespace distill {

struct EvalModelSpec {
  std::string name;  // unique in the report
  std::string role;  // teacher | student | baseline | model
  std::string dir;   // model directory (config.json + *.safetensors)
  WeightType weights = WeightType::F32;  // its linear layers' type (kernels/qmatmul.h)
};

struct EvalOptions {
  std::vector<EvalModelSpec> models;    // exactly one with role "teacher"
  std::vector<std::string> text_files;  // held-out split = last val_fraction of each file
  double val_fraction = 0.05;
  std::vector<std::string> held_out_files;  // or whole files held out (then text_files unused)
  std::string task_file;                    // JSONL {"prompt", "answer"}; "" for none
  std::vector<std::pair<std::string, std::string>> runs;  // (name, run dir) training curves
  int seq_len = 128;                                      // tokens per held-out window
  int max_windows = 64;      // held-out windows scored (evenly spread if more)
  int batch = 8;             // held-out windows per forward pass
  int max_new_tokens = 16;   // task generation
  bool measure_cost = true;  // speed and memory (off: sizes only)
  CostOptions cost;
};

// The model list of the CLI's flags: "teacher", "student", baselines named "baseline" (one) or
// "baseline-1", "baseline-2", ... and NAME=DIR models. Duplicate names are an error.
std::vector<EvalModelSpec> eval_model_list(const std::string& teacher, const std::string& student,
                                           const std::vector<std::string>& baselines,
                                           const std::vector<std::string>& named);

// "NAME=VALUE" split at the first '='; `flag` names the option in errors.
std::pair<std::string, std::string> split_name_value(const std::string& text,
                                                     const std::string& flag);

struct EvalProgress {
  std::string phase;            // "cost", "held-out", "task", or "note" (a message only)
  std::string model;            // the model being evaluated
  int64_t done = 0, total = 0;  // units of this phase: models, windows x models, prompts
  std::string message;
};
using EvalProgressFn = std::function<void(const EvalProgress&)>;

// The held-out text of each file (its last val_fraction, starting at a UTF-8 character boundary
// unless `bytes`; for byte-level models this is exactly TextCorpus's held-out split), or each
// held-out file whole, concatenated.
std::string read_held_out_text(const EvalOptions& options, bool bytes);

// Checks everything that can be checked before the slow work (models, vocabularies, tokenizers,
// task file, runs, seq-len against every model's context), then evaluates. Throws distill::Error.
EvalReport run_eval(const EvalOptions& options, const EvalProgressFn& progress = {});

}  // namespace distill
