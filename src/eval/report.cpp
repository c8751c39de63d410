#include "eval/report.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file.h"

namespace distill {
namespace fs = std::filesystem;

std::string describe_checkpoint(const std::map<std::string, std::string>& metadata) {
  const auto get = [&](const char* key) -> std::string {
    const auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  const std::string step = get("distill.step");
  if (step.empty()) return "";
  std::string s = "step " + step;
  if (const std::string total = get("distill.total_steps"); !total.empty()) s += " of " + total;
  const std::string selection = get("distill.selection");
  if (selection == "best held-out loss") s += ": lowest held-out loss";
  else if (!selection.empty()) s += ": " + selection;
  if (const std::string v = get("distill.val_loss"); !v.empty())
    s += selection == "best held-out loss" ? " (" + v + ")" : " (held-out loss " + v + ")";
  return s;
}

RunCurve load_run_curve(const std::string& name, const std::string& run) {
  RunCurve c;
  c.name = name;
  c.path = fs::is_directory(run) ? (fs::path(run) / "metrics.jsonl").string() : run;
  if (!fs::exists(c.path))
    throw Error("run '{}': {} not found (expected a run directory with metrics.jsonl)", name,
                c.path);
  const std::string text = read_file_text(c.path);
  size_t begin = 0;
  int64_t number = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    number++;
    if (end == std::string::npos) break;  // unterminated last line: a write cut short
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{} line {}", c.path, number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("{}: not valid JSON: {}", where, e.what());
    }
    if (!j.is_object()) throw Error("{}: expected a JSON object", where);
    const bool has_loss = j.contains("loss"), has_val = j.contains("val_loss");
    if (!has_loss && !has_val) continue;
    if (!j.contains("step") || !j["step"].is_number())
      throw Error("{}: \"step\" is missing or not a number", where);
    const double step = j["step"].get<double>();
    for (const char* key : {"loss", "val_loss"}) {
      if (!j.contains(key)) continue;
      if (!j[key].is_number()) throw Error("{}: \"{}\" is not a number", where, key);
      const double v = j[key].get<double>();
      if (!std::isfinite(v)) continue;  // a diverged step; the chart cannot place it
      (std::string(key) == "loss" ? c.loss : c.val_loss).emplace_back(step, v);
    }
  }
  return c;
}

std::string format_sig(double v, int digits) {
  if (!std::isfinite(v)) return std::isnan(v) ? "n/a" : (v > 0 ? "inf" : "-inf");
  if (v == 0.0) return "0";
  const double a = std::fabs(v);
  if (a < 1e-3 || a >= 1e6) return fmt::format("{:.{}e}", v, digits - 1);
  const int mag = int(std::floor(std::log10(a)));
  const int decimals = std::max(0, digits - 1 - mag);
  std::string s = fmt::format("{:.{}f}", v, decimals);
  // Rounding can carry into a new digit (9.9996 -> "10.000"); drop the extra decimal.
  if (decimals > 0 && std::fabs(std::stod(s)) >= std::pow(10.0, mag + 1))
    s = fmt::format("{:.{}f}", v, decimals - 1);
  return s;
}

std::string format_percent(double f) {
  if (!std::isfinite(f)) return "n/a";
  return fmt::format("{:.1f}%", 100.0 * f);
}

std::string format_si(double v) {
  if (!std::isfinite(v)) return "n/a";
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt::format("{:.3g}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (a >= 1e3) return fmt::format("{:.3g}k", v / 1e3);
  return fmt::format("{:.3g}", v);
}

std::string format_bytes(double b) {
  if (!std::isfinite(b)) return "n/a";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::fabs(b) >= 1024.0 && u < 4) {
    b /= 1024.0;
    u++;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

std::vector<ReportMetric> report_metrics(const EvalReport& report) {
  using M = const ModelReport&;
  auto sig = [](double v) { return format_sig(v); };
  auto pct = [](double v) { return format_percent(v); };
  auto tps = [](double v) { return format_sig(v, 3); };
  std::vector<ReportMetric> m = {
      {"held_out.perplexity", "Perplexity", "", false, "quality",
       [](M r) { return std::optional<double>(r.quality.perplexity); }, sig},
      {"held_out.mean_nll", "Held-out NLL", "nats/token", false, "quality",
       [](M r) { return std::optional<double>(r.quality.mean_nll); }, sig},
      {"held_out.kl_to_teacher", "KL(teacher || model)", "nats/token", false, "quality",
       [](M r) { return std::optional<double>(r.quality.kl_to_teacher); }, sig},
      {"held_out.top1_agreement", "Top-1 agreement", "with the teacher", true, "quality",
       [](M r) { return std::optional<double>(r.quality.top1_agreement); }, pct},
      {"held_out.top1_accuracy", "Next-token accuracy", "top-1", true, "quality",
       [](M r) { return std::optional<double>(r.quality.top1_accuracy); }, pct},
  };
  if (!report.task_file.empty()) {
    m.push_back(
        {"task.exact_match", "Task exact match", "", true, "task",
         [](M r) { return r.task ? std::optional<double>(r.task->exact_rate) : std::nullopt; },
         pct});
    m.push_back(
        {"task.contains", "Task contains answer", "", true, "task",
         [](M r) { return r.task ? std::optional<double>(r.task->contains_rate) : std::nullopt; },
         pct});
  }
  auto speed = [](int batch, bool prompt) {
    return [batch, prompt](M r) -> std::optional<double> {
      const ThroughputSample* s = r.cost.at_batch(batch);
      if (!s) return std::nullopt;
      return prompt ? s->prompt_tokens_per_s : s->gen_tokens_per_s;
    };
  };
  std::vector<ReportMetric> cost = {
      {"cost.parameters", "Parameters", "", false, "cost",
       [](M r) { return std::optional<double>(double(r.cost.parameters)); },
       [](double v) { return format_si(v); }},
      {"cost.weights_file_bytes", "Weights on disk", "", false, "cost",
       [](M r) { return std::optional<double>(double(r.cost.weights_file_bytes)); },
       [](double v) { return format_bytes(v); }},
      {"cost.peak_rss_delta_bytes", "Peak memory", "RSS delta", false, "cost",
       [](M r) {
         return r.cost.peak_rss_delta_bytes >= 0
                    ? std::optional<double>(double(r.cost.peak_rss_delta_bytes))
                    : std::nullopt;
       },
       [](double v) { return format_bytes(v); }},
      {"cost.prompt_tokens_per_s.batch1", "Prompt processing, batch 1", "tok/s", true, "cost",
       speed(1, true), tps},
      {"cost.prompt_tokens_per_s.batch8", "Prompt processing, batch 8", "tok/s", true, "cost",
       speed(8, true), tps},
      {"cost.gen_tokens_per_s.batch1", "Generation, batch 1", "tok/s", true, "cost",
       speed(1, false), tps},
      {"cost.gen_tokens_per_s.batch8", "Generation, batch 8", "tok/s", true, "cost",
       speed(8, false), tps},
  };
  m.insert(m.end(), cost.begin(), cost.end());
  return m;
}

namespace {

nlohmann::json points_json(const std::vector<std::pair<double, double>>& pts) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& [x, y] : pts) a.push_back({x, y});
  return a;
}

}  // namespace

nlohmann::json report_to_json(const EvalReport& r) {
  using nlohmann::json;
  json j;
  j["format"] = "distill-eval-report";
  j["version"] = 1;
  j["created"] = r.created;
  j["settings"] = {{"seq_len", r.seq_len},
                   {"max_windows", r.max_windows},
                   {"max_new_tokens", r.max_new_tokens},
                   {"threads", r.threads},
                   {"text_files", r.text_files},
                   {"held_out_rule", r.held_out_rule},
                   {"task_file", r.task_file.empty() ? json(nullptr) : json(r.task_file)},
                   {"tokenizer",
                    {{"kind", r.tokenizer_kind},
                     {"fingerprint", r.tokenizer_fingerprint},
                     {"vocab_size", r.vocab_size}}}};
  j["held_out"] = {{"tokens", r.held_out_tokens}};
  if (!r.models.empty())
    j["held_out"].update(
        {{"windows", r.models[0].quality.windows}, {"positions", r.models[0].quality.positions}});
  // Student vs the first baseline, as a share of the baseline-to-teacher gap (gap_closed).
  json gaps = json::object();
  for (const ReportMetric& m : report_metrics(r))
    if (const auto g = gap_closed(r, m)) gaps[m.key] = *g;
  if (!gaps.empty()) j["gap_closed"] = gaps;
  j["models"] = json::array();
  for (const ModelReport& m : r.models) {
    json mj;
    mj["name"] = m.name;
    mj["role"] = m.role;
    mj["dir"] = m.dir;
    mj["model_type"] = m.model_type;
    mj["weights"] = m.weights;
    mj["layers"] = m.layers;
    mj["hidden_size"] = m.hidden_size;
    mj["vocab_size"] = m.vocab_size;
    mj["checkpoint"] = m.checkpoint;
    const QualityMetrics& q = m.quality;
    mj["held_out"] = {{"positions", q.positions},         {"windows", q.windows},
                      {"mean_nll", q.mean_nll},           {"perplexity", q.perplexity},
                      {"kl_to_teacher", q.kl_to_teacher}, {"top1_agreement", q.top1_agreement},
                      {"top1_accuracy", q.top1_accuracy}};
    if (m.task)
      mj["task"] = {{"prompts", m.task->prompts},
                    {"exact", m.task->exact},
                    {"contains_count", m.task->contains},
                    {"exact_match", m.task->exact_rate},
                    {"contains", m.task->contains_rate}};
    else
      mj["task"] = nullptr;
    const CostMetrics& c = m.cost;
    json speeds = json::array();
    for (const ThroughputSample& s : c.throughput)
      speeds.push_back({{"batch", s.batch},
                        {"prompt_tokens", s.prompt_tokens},
                        {"gen_tokens", s.gen_tokens},
                        {"repeats", s.repeats},
                        {"prefill_s", s.prefill_s},
                        {"decode_s", s.decode_s},
                        {"prompt_tokens_per_s", s.prompt_tokens_per_s},
                        {"gen_tokens_per_s", s.gen_tokens_per_s}});
    mj["cost"] = {{"parameters", c.parameters},
                  {"weights_file_bytes", c.weights_file_bytes},
                  {"weights_memory_bytes", c.weights_memory_bytes},
                  {"peak_rss_delta_bytes",
                   c.peak_rss_delta_bytes >= 0 ? json(c.peak_rss_delta_bytes) : json(nullptr)},
                  {"memory_method", c.memory_method},
                  {"threads", c.threads},
                  {"throughput", speeds}};
    for (const ThroughputSample& s : c.throughput) {
      mj["cost"]["prompt_tokens_per_s"]["batch" + std::to_string(s.batch)] = s.prompt_tokens_per_s;
      mj["cost"]["gen_tokens_per_s"]["batch" + std::to_string(s.batch)] = s.gen_tokens_per_s;
    }
    j["models"].push_back(mj);
  }
  j["task_examples"] = json::array();
  for (size_t i = 0; i < r.task_examples.size(); i++) {
    const TaskExample& ex = r.task_examples[i];
    json ej = {{"line", ex.line}, {"prompt", ex.prompt}, {"answer", ex.answer}};
    ej["outputs"] = json::object();
    for (const ModelReport& m : r.models) {
      if (!m.task || i >= m.task->outcomes.size()) continue;
      const TaskOutcome& o = m.task->outcomes[i];
      ej["outputs"][m.name] = {{"continuation", o.continuation},
                               {"exact", o.exact},
                               {"contains", o.contains},
                               {"generated_tokens", o.generated_tokens}};
    }
    j["task_examples"].push_back(ej);
  }
  j["runs"] = json::array();
  for (const RunCurve& c : r.runs)
    j["runs"].push_back({{"name", c.name},
                         {"path", c.path},
                         {"loss", points_json(c.loss)},
                         {"val_loss", points_json(c.val_loss)}});
  return j;
}

std::optional<double> gap_closed(const EvalReport& r, const ReportMetric& metric) {
  if (metric.group == "cost") return std::nullopt;
  const ModelReport *teacher = nullptr, *student = nullptr, *baseline = nullptr;
  for (const ModelReport& m : r.models) {
    if (m.role == "teacher" && !teacher) teacher = &m;
    if (m.role == "student" && !student) student = &m;
    if (m.role == "baseline" && !baseline) baseline = &m;
  }
  if (!teacher || !student || !baseline) return std::nullopt;
  const auto t = metric.value(*teacher), s = metric.value(*student), b = metric.value(*baseline);
  if (!t || !s || !b || *t == *b) return std::nullopt;
  return (*s - *b) / (*t - *b);
}

std::string render_report_table(const EvalReport& r) {
  const std::vector<ReportMetric> metrics = report_metrics(r);
  size_t label_w = 6;
  for (const ReportMetric& m : metrics) label_w = std::max(label_w, m.label.size());
  std::vector<size_t> col_w;
  for (const ModelReport& m : r.models) col_w.push_back(std::max<size_t>(10, m.name.size()));
  std::ostringstream out;
  out << fmt::format("{:<{}}", "metric", label_w);
  for (size_t i = 0; i < r.models.size(); i++)
    out << fmt::format("  {:>{}}", r.models[i].name, col_w[i]);
  bool any_gap = false;
  for (const ReportMetric& m : metrics) any_gap = any_gap || gap_closed(r, m).has_value();
  if (any_gap) out << "  gap closed";
  out << "\n";
  for (const ReportMetric& m : metrics) {
    out << fmt::format("{:<{}}", m.label, label_w);
    for (size_t i = 0; i < r.models.size(); i++) {
      const auto v = m.value(r.models[i]);
      out << fmt::format("  {:>{}}", v ? m.format(*v) : "-", col_w[i]);
    }
    if (const auto g = gap_closed(r, m)) out << fmt::format("  {:>10}", format_percent(*g));
    out << "\n";
  }
  if (any_gap)
    out << "gap closed: the share of the baseline-to-teacher gap the student closes (100% = "
           "the teacher's value)\n";
  for (const ModelReport& m : r.models)
    if (!m.checkpoint.empty()) out << fmt::format("{}: {}\n", m.name, m.checkpoint);
  return out.str();
}

std::string write_report(const EvalReport& report, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("{}: cannot create the report directory: {}", dir, ec.message());
  // Generated text need not be valid UTF-8 (a byte-level model emits any byte): such bytes
  // become U+FFFD rather than failing the whole report.
  const std::string json_text =
      report_to_json(report).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  write_file_atomic(dir + "/report.json", json_text.data(), json_text.size());
  const std::string html = render_report_html(report);
  const std::string html_path = dir + "/report.html";
  write_file_atomic(html_path, html.data(), html.size());
  return html_path;
}

}  // namespace distill
