// Early stopping in the training loop (--keep-best, --patience): model/ holds the weights of the
// evaluation with the lowest held-out loss and says so in its metadata; patience stops the run;
// a resume (after a stop in the middle, or of a run that already stopped) keeps the same choice;
// distill eval's report names the checkpoint. The held-out losses are scripted by the task, so
// each expectation is exact.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/report.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/presets.h"
#include "train/checkpoint.h"
#include "train/train_loop.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) { return test_support::temp_dir(name); }

// A task whose gradient is constant (so the weights move every step and each step's weights
// differ) and whose held-out loss at evaluation k is script[k] (k counted from 0 across
// resumes: the evaluation's step tells which).
class ScriptedTask final : public TrainTask {
 public:
  ScriptedTask(std::vector<float> script, int eval_every)
      : script_(std::move(script)), eval_every_(eval_every) {}
  ModelConfig model_config() override {
    ModelConfig c = model_preset("gpt2-tiny");
    c.vocab_size = 64;
    c.num_layers = 1;
    return c;
  }
  void init_model(Model& model, uint64_t seed) override { model.init_weights(seed); }
  StepResult step(Model& model, Rng& rng) override {
    float* g = model.grads();
    for (size_t i = 0; i < model.num_params(); i++) g[i] = 1e-3f;
    rng.below(2);
    return StepResult{1.0, 8, nlohmann::json::object()};
  }
  float evaluate(Model&) override {
    evaluations++;
    const size_t k = size_t(current_step / eval_every_) - 1;
    return k < script_.size() ? script_[k] : script_.back();
  }
  nlohmann::json identity() const override { return {{"task", "scripted"}}; }

  int64_t current_step = 0;  // set by the progress callback before evaluate is called
  int evaluations = 0;

 private:
  std::vector<float> script_;
  int eval_every_;
};

TrainLoopOptions options(const fs::path& out) {
  TrainLoopOptions o;
  o.out = out.string();
  o.steps = 40;
  o.warmup = 0;
  o.eval_every = 4;
  o.save_every = 4;
  o.keep_checkpoints = 0;  // keep all, to compare model/ with the checkpoint of the best step
  o.keep_best = true;
  return o;
}

std::map<std::string, std::string> metadata_of(const fs::path& dir) {
  return SafetensorsModel::open(dir.string()).metadata();
}

std::vector<float> weights_of(const fs::path& dir) {
  auto model = load_model_dir(dir.string());
  return std::vector<float>(model->params(), model->params() + model->num_params());
}

// Runs the loop; the task sees the step of each evaluation through a wrapper.
struct RunEvents {
  std::vector<int64_t> new_best_steps;
  int64_t early_stop_step = -1, done_best_step = -1;
};

RunEvents run(const TrainLoopOptions& o, ScriptedTask& task) {
  // The loop evaluates inside step k before reporting it; the task computes which evaluation it
  // is from the step, which it learns by counting steps itself.
  struct Counting final : TrainTask {
    ScriptedTask& t;
    explicit Counting(ScriptedTask& task) : t(task) {}
    ModelConfig model_config() override { return t.model_config(); }
    void init_model(Model& m, uint64_t seed) override { t.init_model(m, seed); }
    StepResult step(Model& m, Rng& rng) override {
      t.current_step++;
      return t.step(m, rng);
    }
    float evaluate(Model& m) override { return t.evaluate(m); }
    nlohmann::json identity() const override { return t.identity(); }
  } counting(task);
  RunEvents r;
  run_training(o, counting, [&](const TrainProgress& p) {
    using K = TrainProgress::Kind;
    if (p.kind == K::Resumed) task.current_step = p.step;
    if (p.kind == K::NewBest) r.new_best_steps.push_back(p.step);
    if (p.kind == K::EarlyStop) r.early_stop_step = p.step;
    if (p.kind == K::Done) r.done_best_step = p.best_step;
  });
  return r;
}

// Held-out loss at steps 4, 8, ..., 40.
const std::vector<float> kScript = {5.0f, 4.0f, 3.0f, 3.5f, 2.5f, 2.5f, 2.7f, 2.9f, 3.1f, 2.6f};

TEST(EarlyStopping, ModelDirHoldsTheBestEvaluationAndSaysWhich) {
  const fs::path dir = temp_dir("early-best");
  ScriptedTask task(kScript, 4);
  const RunEvents r = run(options(dir / "run"), task);
  // New bests: 5.0@4, 4.0@8, 3.0@12, 2.5@20; the tie at 24 keeps the earlier weights.
  EXPECT_EQ(r.new_best_steps, (std::vector<int64_t>{4, 8, 12, 20}));
  EXPECT_EQ(r.done_best_step, 20);
  EXPECT_EQ(task.evaluations, 10);  // no patience: all 40 steps trained
  const auto meta = metadata_of(dir / "run" / "model");
  EXPECT_EQ(meta.at("distill.step"), "20");
  EXPECT_EQ(meta.at("distill.total_steps"), "40");
  EXPECT_EQ(meta.at("distill.selection"), "best held-out loss");
  EXPECT_EQ(meta.at("distill.val_loss"), "2.5");
  EXPECT_EQ(describe_checkpoint(meta), "step 20 of 40: lowest held-out loss (2.5)");
  // The weights are step 20's (the checkpoint of that step), not the last step's.
  const auto best = weights_of(dir / "run" / "model");
  EXPECT_EQ(best, weights_of(dir / "run" / "checkpoints" / "step-00000020"));
  EXPECT_NE(best, weights_of(dir / "run" / "checkpoints" / "step-00000040"));
  // metrics.jsonl marks the new bests.
  std::ifstream in(dir / "run" / "metrics.jsonl");
  std::vector<int64_t> marked;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("best")) marked.push_back(j["step"].get<int64_t>());
  }
  EXPECT_EQ(marked, r.new_best_steps);
}

TEST(EarlyStopping, PatienceStopsAndAResumedRunStaysStopped) {
  const fs::path dir = temp_dir("early-patience");
  TrainLoopOptions o = options(dir / "run");
  o.patience = 3;  // 2.5@20, then 2.5@24, 2.7@28, 2.9@32 do not improve: stop at 32
  ScriptedTask task(kScript, 4);
  const RunEvents r = run(o, task);
  EXPECT_EQ(r.early_stop_step, 32);
  EXPECT_EQ(r.done_best_step, 20);
  EXPECT_EQ(task.evaluations, 8);
  EXPECT_EQ(*latest_checkpoint(o.out), (dir / "run" / "checkpoints" / "step-00000032").string());
  EXPECT_EQ(metadata_of(dir / "run" / "model").at("distill.step"), "20");
  // Resuming a run that stopped trains nothing more and leaves model/ as it is.
  o.resume = true;
  ScriptedTask again(kScript, 4);
  const RunEvents r2 = run(o, again);
  EXPECT_EQ(again.evaluations, 0);
  EXPECT_EQ(r2.done_best_step, 20);
  EXPECT_EQ(weights_of(dir / "run" / "model"),
            weights_of(dir / "run" / "checkpoints" / "step-00000020"));
}

TEST(EarlyStopping, AResumeInTheMiddleMakesTheSameChoice) {
  const fs::path dir = temp_dir("early-resume");
  TrainLoopOptions whole = options(dir / "whole");
  whole.patience = 3;
  ScriptedTask t1(kScript, 4);
  run(whole, t1);

  TrainLoopOptions split = options(dir / "split");
  split.patience = 3;
  split.stop_after = 22;  // stops (with a checkpoint) after step 22: best so far 2.5@20
  ScriptedTask t2(kScript, 4);
  run(split, t2);
  EXPECT_EQ(metadata_of(dir / "split" / "model").at("distill.step"), "20");
  split.stop_after = 0;
  split.resume = true;
  ScriptedTask t3(kScript, 4);
  const RunEvents r = run(split, t3);
  EXPECT_EQ(r.early_stop_step, 32);  // patience counted across the resume
  EXPECT_EQ(weights_of(dir / "split" / "model"), weights_of(dir / "whole" / "model"));
}

TEST(EarlyStopping, BadOptionsAreClearErrors) {
  const fs::path dir = temp_dir("early-bad");
  TrainLoopOptions o = options(dir / "run");
  o.keep_best = false;
  o.patience = 2;
  ScriptedTask task(kScript, 4);
  try {
    run(o, task);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("patience needs keep-best"), std::string::npos) << e.what();
  }
  // A run without --keep-best: model/ is the last step's, and says so.
  o.patience = 0;
  ScriptedTask last(kScript, 4);
  run(o, last);
  const auto meta = metadata_of(dir / "run" / "model");
  EXPECT_EQ(meta.at("distill.selection"), "last");
  EXPECT_EQ(meta.at("distill.step"), "40");
  EXPECT_EQ(describe_checkpoint(meta), "step 40 of 40: last (held-out loss 2.6)");
}

}  // namespace
}  // namespace distill
