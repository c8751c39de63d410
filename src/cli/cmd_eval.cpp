// distill eval: teacher, student and baselines on held-out text, a task file and cost; writes
// report.json and report.html and prints the metrics table.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "core/error.h"
#include "eval/evaluate.h"

namespace distill::cli {

namespace {

struct EvalCliOptions {
  std::string teacher;                 // teacher model directory
  std::string student;                 // student model directory
  std::vector<std::string> baselines;  // baseline model directories
  std::vector<std::string> models;     // NAME=DIR extra models
  std::vector<std::string> runs;       // NAME=RUN_DIR training runs (metrics.jsonl)
  std::string out;                     // report directory
  EvalOptions eval;
  WeightType teacher_weights = WeightType::F32;
  std::vector<std::string> model_weights;  // NAME=TYPE
};

// Progress on stderr: one bar per phase with its ETA, and a line per model timed.
class EvalDisplay {
 public:
  void operator()(const EvalProgress& p) {
    using clock = std::chrono::steady_clock;
    if (p.phase == "note") {
      line(p.message);
      return;
    }
    const std::string key = p.phase + "/" + (p.phase == "task" ? p.model : "");
    if (key != key_) {
      if (bar_) bar_->finish();
      bar_ = std::make_unique<ProgressBar>(long(p.total));
      key_ = key;
      start_ = clock::now();
    }
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const double eta = p.done > 0 ? elapsed / double(p.done) * double(p.total - p.done) : NAN;
    std::string status;
    if (p.phase == "cost") {
      status =
          p.done < p.total
              ? fmt::format("cost: measuring {} ({}/{} models)", p.model, p.done + 1, p.total)
              : fmt::format("cost: {} models measured in {}", p.total, format_duration(elapsed));
    } else if (p.phase == "held-out") {
      status = fmt::format("held-out: {}/{} model-windows, ETA {}", p.done, p.total,
                           format_duration(eta));
    } else {
      status = fmt::format("task {}: {}/{} prompts, ETA {}", p.model, p.done, p.total,
                           format_duration(eta));
    }
    bar_->update(long(p.done), status);
    if (p.done == p.total) {
      bar_->finish();
      bar_.reset();
      key_.clear();
    }
  }

  void finish() {
    if (bar_) bar_->finish();
  }

 private:
  void line(const std::string& text) {
    if (bar_)
      bar_->print(text);
    else
      std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::unique_ptr<ProgressBar> bar_;
  std::string key_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

VerbRun add_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  EvalOptions& e = o->eval;
  app.add_option("--teacher", o->teacher, "teacher model directory (the reference)")->required();
  app.add_option("--student", o->student, "student model directory");
  app.add_option("--baseline", o->baselines, "baseline model directory (repeatable)");
  app.add_option("--model", o->models, "another model to compare, NAME=DIR (repeatable)");
  app.add_option("--text", e.text_files,
                 "text file whose last --val-fraction is the held-out text (repeatable)");
  app.add_option("--val-fraction", e.val_fraction,
                 "held-out tail of each --text file (the split training used)");
  app.add_option("--held-out", e.held_out_files,
                 "text file held out whole (repeatable; replaces the --text split)");
  app.add_option("--task", e.task_file,
                 "JSONL task file, one {\"prompt\": ..., \"answer\": ...} per line");
  app.add_option("--runs", o->runs,
                 "training run for the loss curves, NAME=RUN_DIR with metrics.jsonl (repeatable)");
  app.add_option("--out", o->out, "report directory (report.json, report.html)")->required();
  app.add_option("--seq-len", e.seq_len, "tokens per held-out window");
  app.add_option("--max-windows", e.max_windows,
                 "held-out windows scored (evenly spread over the split when it has more)");
  app.add_option("--batch", e.batch, "held-out windows per forward pass");
  app.add_option("--max-new-tokens", e.max_new_tokens, "greedy tokens generated per task prompt");
  app.add_option("--speed-prompt-tokens", e.cost.prompt_tokens,
                 "prompt tokens per sequence when timing prompt processing");
  app.add_option("--speed-gen-tokens", e.cost.gen_tokens,
                 "tokens generated per sequence when timing generation");
  app.add_option("--speed-repeats", e.cost.repeats,
                 "timed runs after a warm-up, at least (the fastest counts)");
  app.add_option("--speed-seconds", e.cost.min_seconds,
                 "keep timing (up to 100 runs) until this many seconds per model and batch size");
  app.add_flag("!--no-speed", e.measure_cost, "skip the speed and memory measurements");
  add_weights_option(app, o->teacher_weights, "--teacher-weights", "the teacher");
  app.add_option("--model-weights", o->model_weights,
                 "NAME=TYPE: the weight type a named model runs with (repeatable), e.g. "
                 "--model q8=DIR --model-weights q8=q8_0 to measure a quantized teacher");
  return [o]() {
    EvalOptions options = o->eval;
    options.models = eval_model_list(o->teacher, o->student, o->baselines, o->models);
    for (EvalModelSpec& m : options.models)
      if (m.role == "teacher") m.weights = o->teacher_weights;
    for (const std::string& mw : o->model_weights) {
      const auto [name, type] = split_name_value(mw, "--model-weights");
      auto it = std::find_if(options.models.begin(), options.models.end(),
                             [&](const EvalModelSpec& m) { return m.name == name; });
      if (it == options.models.end())
        throw distill::Error("--model-weights {}: no model named '{}' (give it with --model {}=DIR)", mw,
                    name, name);
      it->weights = parse_weight_type(type);
    }
    for (const std::string& r : o->runs) options.runs.push_back(split_name_value(r, "--runs"));
    EvalDisplay display;
    std::fprintf(stderr, "eval: %zu model(s), teacher %s\n", options.models.size(),
                 o->teacher.c_str());
    const EvalReport report = run_eval(options, std::ref(display));
    display.finish();
    const std::string html = write_report(report, o->out);
    std::printf("%s\n", render_report_table(report).c_str());
    std::printf("report: %s\n", html.c_str());
    std::printf("data:   %s/report.json\n", o->out.c_str());
    return 0;
  };
}

}  // namespace distill::cli
