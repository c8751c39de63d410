// What `distill pretrain` and `distill train` share on the command line: the training-loop
// options and the progress display.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>

#include "cli/progress.h"
#include "train/train_loop.h"

namespace distill::cli {

void add_train_loop_options(CLI::App& app, TrainLoopOptions& o);

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
