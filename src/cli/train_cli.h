// What `distill pretrain` and `distill train` share on the command line: the training-loop
// options and the progress display.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>

#include "cli/progress.h"
#include "train/train_loop.h"

namespace distill::cli {

void add_train_loop_options(CLI::App& app, TrainLoopOptions& o);
// --dry-run: print the memory estimate (train/memory_estimate.h) instead of training.
void add_dry_run_option(CLI::App& app, bool& dry_run);
void print_memory_estimate(const MemoryEstimate& estimate);

// Renders TrainProgress events: a progress bar with loss, held-out loss, lr, grad norm,
// throughput and ETA; a line per evaluation and checkpoint; the final model's path on stdout.
class TrainDisplay {
 public:
  void operator()(const TrainProgress& p);

 private:
  std::unique_ptr<ProgressBar> bar_;
  float last_val_ = NAN;
};

}  // namespace distill::cli
