#include <memory>

#include "cli/train_cli.h"
#include "cli/verbs.h"
#include "train/pretrain.h"

namespace distill::cli {

VerbRun add_pretrain(CLI::App& app) {
  auto o = std::make_shared<PretrainOptions>();
  o->loop.out = "runs/pretrain";
  app.add_option("data", o->data, "text files to train on")->required();
  app.add_option("--model-config", o->config, "HF config.json of the model (default: --preset)");
  app.add_option("--preset", o->preset,
                 "built-in model: gpt2-tiny, llama-tiny, gpt2-mini, gpt2-bench, llama-bench");
  app.add_option("--tokenizer", o->tokenizer,
                 "tokenizer.json / tokenizer.model or a directory holding one (default: bytes); "
                 "a preset takes its vocabulary size, and the model directories carry its files");
  app.add_option("--val-fraction", o->val_fraction, "tail of each file held out for evaluation");
  add_train_loop_options(app, o->loop);
  auto dry_run = std::make_shared<bool>(false);
  add_dry_run_option(app, *dry_run);
  return [o, dry_run]() {
    if (*dry_run) {
      print_memory_estimate(pretrain_memory_estimate(*o));
      return 0;
    }
    TrainDisplay display;
    pretrain(*o, std::ref(display));
    return 0;
  };
}

}  // namespace distill::cli
