// report.html: one self-contained page (inline CSS and SVG, no scripts, no external resources).
#include <fmt/format.h>

#include <cmath>

#include "eval/report.h"
#include "eval/svg.h"

namespace distill {

namespace {

using svg::escape;

constexpr const char* kCss = R"css(
:root { --fg: #1d2430; --muted: #667085; --line: #e4e7ec; --bg: #f4f6f9; --card: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 32px 28px 56px; }
header h1 { font-size: 28px; line-height: 1.2; margin: 0 0 6px; letter-spacing: -0.01em; }
header .meta { color: var(--muted); font-size: 13.5px; margin: 2px 0; }
header .meta code { font-size: 12.5px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; background: #eef1f5;
  padding: 1px 5px; border-radius: 4px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 14px;
  padding: 20px 24px 22px; margin-top: 22px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04); }
h2 { font-size: 18px; margin: 0 0 4px; }
p.note { color: var(--muted); font-size: 13px; margin: 0 0 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 14px;
  margin-top: 22px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 14px;
  padding: 14px 18px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04); }
.card .label { color: var(--muted); font-size: 12.5px; text-transform: uppercase;
  letter-spacing: 0.05em; font-weight: 600; }
.card .big { font-size: 28px; font-weight: 700; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th.num, td.num { text-align: right; }
thead th { font-size: 13px; color: #344054; border-bottom: 2px solid #d0d5dd; white-space: nowrap; }
tr.group td { background: #f2f4f7; font-weight: 600; font-size: 12px; text-transform: uppercase;
  letter-spacing: 0.06em; color: #475467; text-align: left; }
td.metric { white-space: nowrap; }
td.metric .unit { color: var(--muted); font-size: 12.5px; margin-left: 6px; }
td.metric .dir { color: #98a2b3; font-size: 12px; margin-left: 4px; }
td.best { font-weight: 700; color: #18794e; background: #ecfdf3; }
td.num.na { text-align: right; }
td.na { color: #98a2b3; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; }
.legend-row { display: flex; flex-wrap: wrap; gap: 18px; margin: 0 0 12px; font-size: 13.5px; }
.chart-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
  gap: 14px; }
.chart-grid.wide { grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); }
.chart-box { border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
svg.chart { width: 100%; height: auto; display: block; }
.chart-bg { fill: #ffffff; }
.chart-title { font-size: 14px; font-weight: 600; fill: #1d2430; }
.chart-sub { font-size: 11.5px; fill: #667085; }
.grid { stroke: #edf0f3; stroke-width: 1; }
.axis { stroke: #98a2b3; stroke-width: 1; }
.tick { font-size: 11px; fill: #475467; }
.axis-label { font-size: 12px; fill: #344054; font-weight: 500; }
.series { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
.series.dashed { stroke-dasharray: 7 4; stroke-width: 2.2; }
.marker { stroke: #ffffff; stroke-width: 1.2; }
.legend-text { font-size: 12px; fill: #344054; }
.bar-value { font-size: 11px; font-weight: 600; fill: #344054; }
.point { stroke: #ffffff; stroke-width: 2; }
.point-label { font-size: 12px; fill: #1d2430; font-weight: 600; }
.muted { fill: #98a2b3; color: #98a2b3; }
td.text { text-align: left; white-space: pre-wrap; word-break: break-word; max-width: 300px;
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
.ok { color: #18794e; font-weight: 700; }
.part { color: #b54708; font-weight: 700; }
.bad { color: #c01048; font-weight: 700; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 26px; }
)css";

const char* kModelColors[] = {"#2f9e44", "#ae3ec9", "#1098ad", "#e64980",
                              "#74b816", "#5c7cfa", "#868e96"};
const char* kRunColors[] = {"#3b5bdb", "#f76707", "#2f9e44", "#ae3ec9",
                            "#1098ad", "#e03131", "#74b816", "#868e96"};

std::vector<std::string> model_colors(const EvalReport& r) {
  std::vector<std::string> colors;
  size_t other = 0;
  for (const ModelReport& m : r.models) {
    if (m.role == "teacher")
      colors.push_back("#3b5bdb");
    else if (m.role == "student")
      colors.push_back("#f76707");
    else
      colors.push_back(kModelColors[other++ % std::size(kModelColors)]);
  }
  return colors;
}

std::string swatch(const std::string& color) {
  return fmt::format("<span class=\"swatch\" style=\"background:{}\"></span>", color);
}

// Metrics measured against the teacher are trivially best for the teacher itself.
bool teacher_referenced(const ReportMetric& m) {
  return m.key == "held_out.kl_to_teacher" || m.key == "held_out.top1_agreement";
}

std::string group_title(const std::string& g) {
  if (g == "quality") return "Quality on held-out text";
  if (g == "task") return "Task";
  return "Cost";
}

std::string metrics_table(const EvalReport& r, const std::vector<ReportMetric>& metrics,
                          const std::vector<std::string>& colors) {
  std::string s = "<table class=\"metrics\">\n<thead><tr><th>Metric</th>";
  for (size_t i = 0; i < r.models.size(); i++)
    s += fmt::format("<th class=\"num\">{}{}</th>", swatch(colors[i]), escape(r.models[i].name));
  s += "</tr></thead>\n<tbody>\n";
  std::string group;
  for (const ReportMetric& m : metrics) {
    if (m.group != group) {
      group = m.group;
      s += fmt::format("<tr class=\"group\"><td colspan=\"{}\">{}</td></tr>\n", r.models.size() + 1,
                       escape(group_title(group)));
    }
    // The best value among the models it is fair to compare (only with two or more of them,
    // and not when they all tie); every model that ties with it is marked.
    auto comparable = [&](size_t i) {
      const auto v = m.value(r.models[i]);
      return v && std::isfinite(*v) && !(teacher_referenced(m) && r.models[i].role == "teacher");
    };
    std::optional<double> best, worst;
    int candidates = 0;
    for (size_t i = 0; i < r.models.size(); i++) {
      if (!comparable(i)) continue;
      const double v = *m.value(r.models[i]);
      candidates++;
      if (!best || (m.higher_is_better ? v > *best : v < *best)) best = v;
      if (!worst || (m.higher_is_better ? v < *worst : v > *worst)) worst = v;
    }
    if (best == worst) candidates = 0;  // nothing to tell apart
    s += fmt::format(
        "<tr><td class=\"metric\">{}<span class=\"unit\">{}</span><span "
        "class=\"dir\">{}</span></td>",
        escape(m.label), escape(m.unit),
        m.higher_is_better ? "\u2191 higher is better" : "\u2193 lower is better");
    for (size_t i = 0; i < r.models.size(); i++) {
      const auto v = m.value(r.models[i]);
      if (!v) {
        s += "<td class=\"num na\">\u2013</td>";
        continue;
      }
      const bool is_best = candidates >= 2 && comparable(i) && *v == *best;
      s += fmt::format("<td class=\"num{}\">{}</td>", is_best ? " best" : "", escape(m.format(*v)));
    }
    s += "</tr>\n";
  }
  s += "</tbody>\n</table>\n";
  return s;
}

const ModelReport* find_role(const EvalReport& r, const char* role) {
  for (const ModelReport& m : r.models)
    if (m.role == role) return &m;
  return nullptr;
}

std::string card(const std::string& label, const std::string& big, const std::string& sub) {
  return fmt::format(
      "<div class=\"card\"><div class=\"label\">{}</div><div class=\"big\">{}</div>"
      "<div class=\"sub\">{}</div></div>\n",
      escape(label), escape(big), escape(sub));
}

// Headline numbers: the student against the teacher.
std::string summary_cards(const EvalReport& r) {
  const ModelReport* t = find_role(r, "teacher");
  const ModelReport* s = find_role(r, "student");
  if (!t || !s) return "";
  std::string out = "<div class=\"cards\">\n";
  if (t->cost.parameters > 0)
    out += card(
        "Size", format_percent(double(s->cost.parameters) / double(t->cost.parameters)),
        fmt::format("of the teacher's parameters ({} vs {})", format_si(double(s->cost.parameters)),
                    format_si(double(t->cost.parameters))));
  const ThroughputSample* ts = t->cost.at_batch(1);
  const ThroughputSample* ss = s->cost.at_batch(1);
  if (ts && ss && ts->gen_tokens_per_s > 0)
    out +=
        card("Generation speed",
             fmt::format("{}\u00d7", format_sig(ss->gen_tokens_per_s / ts->gen_tokens_per_s, 3)),
             fmt::format("the teacher's, batch 1 ({} vs {} tok/s)",
                         format_sig(ss->gen_tokens_per_s, 3), format_sig(ts->gen_tokens_per_s, 3)));
  out += card("Perplexity", format_sig(s->quality.perplexity),
              fmt::format("student; teacher {}", format_sig(t->quality.perplexity)));
  out +=
      card("Top-1 agreement", format_percent(s->quality.top1_agreement),
           fmt::format("with the teacher; KL {} nats/token", format_sig(s->quality.kl_to_teacher)));
  if (s->task && t->task)
    out += card("Task exact match", format_percent(s->task->exact_rate),
                fmt::format("student; teacher {} ({} prompts)", format_percent(t->task->exact_rate),
                            s->task->prompts));
  return out + "</div>\n";
}

std::string models_table(const EvalReport& r, const std::vector<std::string>& colors) {
  std::string s =
      "<table>\n<thead><tr><th>Model</th><th>Role</th><th>Type</th>"
      "<th class=\"num\">Layers</th><th class=\"num\">Hidden</th>"
      "<th class=\"num\">Vocabulary</th><th>Checkpoint</th><th>Directory</th></tr></thead>\n"
      "<tbody>\n";
  for (size_t i = 0; i < r.models.size(); i++) {
    const ModelReport& m = r.models[i];
    s += fmt::format(
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>"
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"text\">{}</td>"
        "<td class=\"text\">{}</td></tr>\n",
        swatch(colors[i]), escape(m.name), escape(m.role), escape(m.model_type), m.layers,
        m.hidden_size, m.vocab_size, m.checkpoint.empty() ? "&mdash;" : escape(m.checkpoint),
        escape(m.dir));
  }
  return s + "</tbody>\n</table>\n";
}

std::string training_section(const EvalReport& r) {
  std::string s = "<section id=\"training\">\n<h2>Training curves</h2>\n";
  if (r.runs.empty())
    return s +
           "<p class=\"note\">No runs given (<code>--runs NAME=RUN_DIR</code> adds the "
           "training and held-out loss of a run's metrics.jsonl).</p>\n</section>\n";
  s += "<p class=\"note\">Solid: training loss per step. Dashed with dots: held-out loss. One "
       "colour per run. Each run logs its own objective (a distillation run its KD loss, a "
       "pretraining run cross-entropy).</p>\n";
  svg::LineChart chart;
  chart.title = "Loss against step";
  chart.x_label = "step";
  chart.y_label = "loss (nats/token)";
  for (size_t i = 0; i < r.runs.size(); i++) {
    const RunCurve& c = r.runs[i];
    const std::string color = kRunColors[i % std::size(kRunColors)];
    if (!c.loss.empty()) chart.series.push_back({c.name + " (train)", color, c.loss, false, false});
    if (!c.val_loss.empty())
      chart.series.push_back({c.name + " (held-out)", color, c.val_loss, true, true});
  }
  s += "<div class=\"chart-box\">" + svg::line_chart(chart) + "</div>\n";
  std::string files;
  for (const RunCurve& c : r.runs)
    files +=
        fmt::format("{}<code>{}</code> ({} training, {} held-out points)",
                    files.empty() ? "" : "; ", escape(c.path), c.loss.size(), c.val_loss.size());
  return s + "<p class=\"note\" style=\"margin-top:10px\">From " + files + ".</p>\n</section>\n";
}

std::string bars_section(const EvalReport& r, const std::vector<ReportMetric>& metrics,
                         const std::vector<std::string>& colors) {
  std::string s =
      "<section id=\"comparison\">\n<h2>Teacher, student and baselines</h2>\n"
      "<p class=\"note\">One chart per metric; the arrow says which way is better."
      "</p>\n<div class=\"legend-row\">";
  for (size_t i = 0; i < r.models.size(); i++)
    s += fmt::format("<span>{}{} <span class=\"muted\">({})</span></span>", swatch(colors[i]),
                     escape(r.models[i].name), escape(r.models[i].role));
  s += "</div>\n<div class=\"chart-grid\">\n";
  for (const ReportMetric& m : metrics) {
    svg::BarChart chart;
    chart.title = m.label;
    chart.subtitle = (m.unit.empty() ? "" : m.unit + " \u00b7 ") +
                     (m.higher_is_better ? "\u2191 higher is better" : "\u2193 lower is better");
    const bool percent = m.format(0.5).find('%') != std::string::npos;
    if (percent) chart.tick_format = [](double v) { return fmt::format("{:.0f}%", 100 * v); };
    // Byte counts are drawn in the binary unit of the largest, so the ticks are round numbers.
    double scale = 1.0;
    if (m.key == "cost.weights_file_bytes" || m.key == "cost.peak_rss_delta_bytes") {
      double largest = 0;
      for (const ModelReport& model : r.models)
        if (const auto v = m.value(model)) largest = std::max(largest, *v);
      const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
      int u = 0;
      while (largest / scale >= 1024.0 && u < 4) scale *= 1024.0, u++;
      chart.subtitle = std::string(units[u]) + " \u00b7 " + chart.subtitle;
    }
    for (size_t i = 0; i < r.models.size(); i++) {
      const auto v = m.value(r.models[i]);
      chart.bars.push_back(
          {r.models[i].name, colors[i], v ? *v / scale : NAN, v ? m.format(*v) : ""});
    }
    s += "<div class=\"chart-box\">" + svg::bar_chart(chart) + "</div>\n";
  }
  return s + "</div>\n</section>\n";
}

std::string scatter_section(const EvalReport& r, const std::vector<std::string>& colors) {
  std::string s =
      "<section id=\"tradeoff\">\n<h2>Quality against cost</h2>\n<p class=\"note\">"
      "Down and to the left is better on the first chart; up and to the right on "
      "the second.</p>\n<div class=\"chart-grid wide\">\n";
  svg::ScatterChart ppl;
  ppl.title = "Perplexity against parameters";
  ppl.x_label = "parameters (log scale)";
  ppl.y_label = "held-out perplexity";
  ppl.log_x = true;
  ppl.x_format = [](double v) { return format_si(v); };
  svg::ScatterChart speed;
  const bool task = !r.task_file.empty();
  speed.title = task ? "Task exact match against generation speed"
                     : "Agreement with the teacher against generation speed";
  speed.x_label = "generation tokens/s, batch 1 (log scale)";
  speed.y_label = task ? "task exact match" : "top-1 agreement";
  speed.log_x = true;
  speed.x_format = [](double v) { return format_si(v); };
  speed.y_format = [](double v) { return fmt::format("{:.0f}%", 100 * v); };
  for (size_t i = 0; i < r.models.size(); i++) {
    const ModelReport& m = r.models[i];
    ppl.points.push_back({m.name, colors[i], double(m.cost.parameters), m.quality.perplexity});
    const ThroughputSample* t = m.cost.at_batch(1);
    const double y = task ? (m.task ? m.task->exact_rate : NAN) : m.quality.top1_agreement;
    speed.points.push_back({m.name, colors[i], t ? t->gen_tokens_per_s : NAN, y});
  }
  s += "<div class=\"chart-box\">" + svg::scatter_chart(ppl) + "</div>\n";
  s += "<div class=\"chart-box\">" + svg::scatter_chart(speed) + "</div>\n";
  return s + "</div>\n</section>\n";
}

std::string shown_text(const std::string& text, size_t max_chars) {
  std::string s;
  for (char c : text) s += c == '\n' ? std::string("\u23ce") : std::string(1, c);
  if (s.size() > max_chars) {
    size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) cut--;  // UTF-8
    s = s.substr(0, cut) + "\u2026";
  }
  return escape(s);
}

std::string examples_section(const EvalReport& r) {
  if (r.task_file.empty()) return "";
  const size_t shown = std::min<size_t>(12, r.task_examples.size());
  std::string s = fmt::format(
      "<section id=\"examples\">\n<h2>Task examples</h2>\n<p class=\"note\">The first {} of {} "
      "prompts of <code>{}</code>. <span class=\"ok\">\u2713</span> exact match, <span "
      "class=\"part\">\u2248</span> contains the answer, <span class=\"bad\">\u2717</span> "
      "neither. \u23ce marks a line break.</p>\n<table>\n<thead><tr><th>Line</th><th>Prompt</th>"
      "<th>Answer</th>",
      shown, r.task_examples.size(), escape(r.task_file));
  for (const ModelReport& m : r.models) s += "<th>" + escape(m.name) + "</th>";
  s += "</tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < shown; i++) {
    const TaskExample& ex = r.task_examples[i];
    s += fmt::format("<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td>", ex.line,
                     shown_text(ex.prompt, 80), shown_text(ex.answer, 40));
    for (const ModelReport& m : r.models) {
      if (!m.task || i >= m.task->outcomes.size()) {
        s += "<td class=\"na\">\u2013</td>";
        continue;
      }
      const TaskOutcome& o = m.task->outcomes[i];
      const char* mark = o.exact      ? "<span class=\"ok\">\u2713</span>"
                         : o.contains ? "<span class=\"part\">\u2248</span>"
                                      : "<span class=\"bad\">\u2717</span>";
      s += fmt::format("<td class=\"text\">{} {}</td>", mark, shown_text(o.continuation, 48));
    }
    s += "</tr>\n";
  }
  return s + "</tbody>\n</table>\n</section>\n";
}

std::string method_notes(const EvalReport& r) {
  std::string s =
      "<ul class=\"note\" style=\"color:#667085;font-size:13px;margin:12px 0 0;"
      "padding-left:18px\">\n";
  if (!r.models.empty()) {
    const QualityMetrics& q = r.models[0].quality;
    s += fmt::format(
        "<li>Held-out quality: {} next-token positions in {} windows of {} tokens, "
        "cut from {} held-out tokens ({}); teacher-forced, T = 1. Perplexity = "
        "exp(mean NLL); KL and agreement compare with the teacher's full "
        "distribution at the same positions.</li>\n",
        q.positions, q.windows, r.seq_len, r.held_out_tokens, escape(r.held_out_rule));
    for (const ModelReport& m : r.models)
      if (m.task) {
        s += fmt::format(
            "<li>Task: {} prompts, greedy, up to {} new tokens; the first line "
            "of the continuation is compared with the answer (exact match at a "
            "word boundary, or contains).</li>\n",
            m.task->prompts, r.max_new_tokens);
        break;
      }
    const CostMetrics& c = r.models[0].cost;
    if (!c.throughput.empty())
      s += fmt::format(
          "<li>Speed: the Generator at batch 1 and 8, greedy, prompts of {} tokens "
          "then {} more tokens per sequence after the first; prompt processing "
          "is timed up to the first token, generation after it; the fastest of "
          "repeated runs after a warm-up ({} at batch 1), {} threads.</li>\n",
          c.throughput[0].prompt_tokens, c.throughput[0].gen_tokens, c.throughput[0].repeats,
          c.threads);
    s += fmt::format("<li>Peak memory: {}.</li>\n", escape(c.memory_method));
  }
  return s + "</ul>\n";
}

}  // namespace

std::string render_report_html(const EvalReport& r) {
  const std::vector<std::string> colors = model_colors(r);
  const std::vector<ReportMetric> metrics = report_metrics(r);
  std::string names;
  for (const ModelReport& m : r.models) names += (names.empty() ? "" : ", ") + m.name;
  std::string files;
  for (const std::string& f : r.text_files)
    files += (files.empty() ? "" : ", ") + fmt::format("<code>{}</code>", escape(f));
  std::string s =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>distill eval report</title>\n<style>" +
      std::string(kCss) + "</style>\n</head>\n<body>\n<main>\n";
  s += fmt::format(
      "<header>\n<h1>Distillation report</h1>\n<p class=\"meta\">{} \u00b7 {}"
      "</p>\n<p class=\"meta\">Held-out text: {} ({}) \u00b7 tokenizer {} "
      "(vocabulary {}){}</p>\n</header>\n",
      escape(names), escape(r.created), files, escape(r.held_out_rule), escape(r.tokenizer_kind),
      r.vocab_size,
      r.task_file.empty() ? "" : " \u00b7 task <code>" + escape(r.task_file) + "</code>");
  s += summary_cards(r);
  s += "<section id=\"metrics\">\n<h2>Metrics</h2>\n<p class=\"note\">Best value per row in "
       "green (the teacher is left out of the rows measured against itself).</p>\n";
  s += metrics_table(r, metrics, colors) + method_notes(r) + "</section>\n";
  s += training_section(r);
  s += bars_section(r, metrics, colors);
  s += scatter_section(r, colors);
  s += examples_section(r);
  s += "<section id=\"models\">\n<h2>Models</h2>\n" + models_table(r, colors) + "</section>\n";
  s += "<footer>Written by <code>distill eval</code>. Every number, with the count behind it, is "
       "in report.json beside this page.</footer>\n</main>\n</body>\n</html>\n";
  return s;
}

}  // namespace distill
