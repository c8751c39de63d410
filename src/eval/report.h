// The evaluation report: every number of `distill eval` with the count behind it, written as
// report.json and as a self-contained report.html (inline CSS and SVG charts, no scripts, no
// external resources).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eval/cost.h"
#include "eval/metrics.h"
#include "eval/task_suite.h"

namespace distill {

struct ModelReport {
  std::string name;  // "teacher", "student", "baseline", or a --model name
  std::string role;  // teacher | student | baseline | model
  std::string dir;
  std::string model_type;  // HF model_type: gpt2, llama, ...
  std::string weights = "f32";  // the type its linear layers ran with (kernels/qmatmul.h)
  int layers = 0, hidden_size = 0, vocab_size = 0;
  // Which weights these are, from the training run's safetensors metadata (distill.step ...):
  // "step 800 of 1600: lowest held-out loss (2.1234)", "step 1600 of 1600: last"; "" when the
  // directory does not say (a model not trained by distill).
  std::string checkpoint;
  QualityMetrics quality;
  std::optional<TaskScore> task;  // absent without a task file
  CostMetrics cost;
};

// The `checkpoint` description of a model directory's safetensors __metadata__.
std::string describe_checkpoint(const std::map<std::string, std::string>& metadata);

// A training run's metrics.jsonl: training loss and held-out loss against the step.
struct RunCurve {
  std::string name;
  std::string path;                                 // the metrics.jsonl read
  std::vector<std::pair<double, double>> loss;      // (step, loss)
  std::vector<std::pair<double, double>> val_loss;  // (step, val_loss)
};

struct EvalReport {
  std::string created;                  // UTC, ISO 8601
  std::vector<std::string> text_files;  // where the held-out text came from
  std::string held_out_rule;            // e.g. "last 5% of each file" or "whole file"
  int seq_len = 0, max_windows = 0, max_new_tokens = 0;
  int64_t held_out_tokens = 0;  // tokens of the held-out split
  std::string tokenizer_kind, tokenizer_fingerprint;
  int vocab_size = 0;
  std::string task_file;
  std::vector<TaskExample> task_examples;
  std::vector<ModelReport> models;  // teacher first
  std::vector<RunCurve> runs;
  int threads = 0;
};

// Reads RUN (a run directory holding metrics.jsonl, or the file itself). Lines with "loss" add a
// training point, lines with "val_loss" a held-out point (both need "step"). A line that is not
// a JSON object, or whose step/loss is not a number, is an error "FILE line N: ..."; a last line
// without its newline (a run cut short while writing it) is skipped.
RunCurve load_run_curve(const std::string& name, const std::string& run);

// One metric as the table, the charts, the terminal and the tests show it.
struct ReportMetric {
  std::string key;    // report.json key path, e.g. "held_out.perplexity"
  std::string label;  // "Perplexity"
  std::string unit;   // "nats", "tok/s", "" ...
  bool higher_is_better = false;
  std::string group;                                               // "quality", "task" or "cost"
  std::function<std::optional<double>(const ModelReport&)> value;  // nullopt: not measured
  std::function<std::string(double)> format;  // how the page and the terminal print it
};

// Every metric of the table and the bar charts, in display order (task metrics only when the
// report has a task file).
std::vector<ReportMetric> report_metrics(const EvalReport& report);

// Number formats of the report: 4 significant digits without exponent in [1e-3, 1e6);
// percentages with one decimal; SI counts ("1.23M"); bytes in binary units ("4.50 MiB").
std::string format_sig(double v, int digits = 4);
std::string format_percent(double fraction);
std::string format_si(double v);
std::string format_bytes(double bytes);

nlohmann::json report_to_json(const EvalReport& report);
std::string render_report_html(const EvalReport& report);  // report_html.cpp
// How much of the baseline-to-teacher gap the student closes on a quality or task metric:
// (student - baseline) / (teacher - baseline), 1 = the teacher's value, 0 = no better than the
// baseline, negative = worse. nullopt without a student and a baseline (the first one), for cost
// metrics, when a value is missing, or when teacher and baseline are equal.
std::optional<double> gap_closed(const EvalReport& report, const ReportMetric& metric);

// The metrics table as fixed-width text for the terminal (with a "gap closed" column when the
// report has a student and a baseline).
std::string render_report_table(const EvalReport& report);

// Writes report.json and report.html into `dir` (created if missing), each atomically.
// Returns the path of report.html.
std::string write_report(const EvalReport& report, const std::string& dir);

}  // namespace distill
