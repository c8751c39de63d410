// Static SVG charts for the HTML report: line charts (training curves), bar charts (one metric
// across models) and scatter plots (quality against cost). Each returns one self-contained
// <svg> element with a viewBox (it scales to its container), axes, ticks, axis labels and a
// legend; styling comes from the page's CSS classes (report_html.cpp), colours from the data.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distill::svg {

// Text for XML content and attribute values: markup characters escaped, control characters as
// spaces, bytes that are not valid UTF-8 (e.g. a byte-level model's output) as U+FFFD.
std::string escape(std::string_view text);

// Axis ticks covering [lo, hi]: round steps (1, 2 or 5 times a power of ten) on a linear axis,
// powers of ten (with 2 and 5 between them when the range spans less than two decades) on a log
// axis. `lo`/`hi` of the result are the axis ends (widened to whole ticks on a linear axis).
struct Ticks {
  double lo = 0.0, hi = 1.0;
  double step = 0.0;  // linear axes
  std::vector<double> values;
};
Ticks linear_ticks(double lo, double hi, int target = 5);
Ticks log_ticks(double lo, double hi);
// A tick value as text, with as many decimals as the step needs; SI suffixes from 10k up.
std::string tick_label(double v, double step);

using Format = std::function<std::string(double)>;

struct LineSeries {
  std::string name, color;
  std::vector<std::pair<double, double>> points;  // (x, y), x increasing
  bool dashed = false;
  bool markers = false;  // a dot at every point (sparse series such as held-out losses)
};

struct LineChart {
  std::string title, x_label, y_label;
  std::vector<LineSeries> series;
  int width = 880, height = 400;
};
std::string line_chart(const LineChart& chart);

struct Bar {
  std::string label, color;
  double value = 0.0;
  std::string value_text;  // printed above the bar
};

struct BarChart {
  std::string title, subtitle;
  std::vector<Bar> bars;
  Format tick_format;  // y tick labels; default tick_label
  int width = 300, height = 230;
};
std::string bar_chart(const BarChart& chart);

struct ScatterPoint {
  std::string label, color;
  double x = 0.0, y = 0.0;
};

struct ScatterChart {
  std::string title, x_label, y_label;
  std::vector<ScatterPoint> points;
  bool log_x = false, log_y = false;
  Format x_format, y_format;  // tick labels; default tick_label
  int width = 560, height = 380;
};
std::string scatter_chart(const ScatterChart& chart);

}  // namespace distill::svg
