#include "eval/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace distill::svg {

namespace {

std::string num(double v) { return fmt::format("{:.1f}", v); }

// The plot area and the mapping of data values to pixels on one axis.
struct Scale {
  double lo = 0, hi = 1;  // data range
  double a = 0, b = 1;    // pixel range (b < a for a y axis)
  bool log = false;
  double operator()(double v) const {
    double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                   : (v - lo) / (hi - lo);
    if (!std::isfinite(t)) t = 0.5;
    return a + t * (b - a);
  }
};

struct Frame {
  double left, top, right, bottom;  // plot area edges in pixels
};

std::string truncate(const std::string& s, size_t max_chars) {
  if (s.size() <= max_chars || max_chars < 2) return s;
  return s.substr(0, max_chars - 1) + "\u2026";
}

std::string header(int width, int height, const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {} {}\" "
      "width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"{}\"><title>{}</title>\n"
      "<rect class=\"chart-bg\" x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" rx=\"8\"/>\n",
      width, height, width, height, escape(title), escape(title), width, height);
}

std::string title_text(const std::string& title, const std::string& subtitle) {
  std::string s =
      fmt::format("<text class=\"chart-title\" x=\"16\" y=\"24\">{}</text>\n", escape(title));
  if (!subtitle.empty())
    s += fmt::format("<text class=\"chart-sub\" x=\"16\" y=\"41\">{}</text>\n", escape(subtitle));
  return s;
}

std::string label_of(const Format& f, double v, double step) {
  return f ? f(v) : tick_label(v, step);
}

// Horizontal grid lines with y tick labels, and the y axis label rotated along the left edge.
std::string y_axis(const Frame& fr, const Scale& ys, const Ticks& t, const Format& f,
                   const std::string& label) {
  std::string s;
  for (double v : t.values) {
    const double y = ys(v);
    s += fmt::format("<line class=\"grid\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>\n",
                     num(fr.left), num(y), num(fr.right), num(y));
    s += fmt::format(
        "<text class=\"tick\" x=\"{}\" y=\"{}\" dy=\"0.32em\" "
        "text-anchor=\"end\">{}</text>\n",
        num(fr.left - 8), num(y), escape(label_of(f, v, t.step)));
  }
  s += fmt::format("<line class=\"axis\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n",
                   num(fr.left), num(fr.top), num(fr.bottom));
  if (!label.empty()) {
    const double cy = (fr.top + fr.bottom) / 2;
    s += fmt::format(
        "<text class=\"axis-label\" x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" "
        "transform=\"rotate(-90 {0} {1})\">{2}</text>\n",
        num(18), num(cy), escape(label));
  }
  return s;
}

// The x axis line, tick marks with labels, and the x axis label centred below.
std::string x_axis(const Frame& fr, const Scale& xs, const Ticks& t, const Format& f,
                   const std::string& label, bool grid) {
  std::string s;
  for (double v : t.values) {
    const double x = xs(v);
    if (grid)
      s += fmt::format("<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n",
                       num(x), num(fr.top), num(fr.bottom));
    s += fmt::format("<line class=\"axis\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", num(x),
                     num(fr.bottom), num(fr.bottom + 5));
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     num(x), num(fr.bottom + 19), escape(label_of(f, v, t.step)));
  }
  s += fmt::format("<line class=\"axis\" x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\"/>\n",
                   num(fr.left), num(fr.right), num(fr.bottom));
  if (!label.empty())
    s += fmt::format(
        "<text class=\"axis-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}"
        "</text>\n",
        num((fr.left + fr.right) / 2), num(fr.bottom + 40), escape(label));
  return s;
}

// The nearest of 1, 2, 5 times a power of ten at or below (down) or at or above v > 0.
double round_125(double v, bool down) {
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  const double steps[] = {1, 2, 5, 10};
  if (down) {
    for (int i = 3; i >= 0; i--)
      if (steps[i] * p <= v * (1 + 1e-9)) return steps[i] * p;
    return p;
  }
  for (double m : steps)
    if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

// Ticks of a data range with some room around the points (scatter plots). A log axis ends on
// round values (1, 2 or 5 times a power of ten) so that both ends carry a tick.
Ticks padded_ticks(double lo, double hi, bool log, int target) {
  if (log) {
    const double r = lo == hi ? 3.0 : std::pow(hi / lo, 0.08);
    return log_ticks(round_125(lo / r, true), round_125(hi * r, false));
  }
  const double pad = lo == hi ? (lo == 0 ? 1.0 : std::fabs(lo) * 0.1) : (hi - lo) * 0.08;
  double a = lo - pad;
  if (lo >= 0 && a < 0) a = 0;
  return linear_ticks(a, hi + pad, target);
}

}  // namespace

namespace {

// Length of the valid UTF-8 sequence at text[i], or 0 (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF).
size_t utf8_length(std::string_view text, size_t i) {
  const auto u = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = u(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else
    return 0;
  if (i + n > text.size() || u(i + 1) < lo || u(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; k++)
    if ((u(i + k) & 0xC0) != 0x80) return 0;
  return n;
}

}  // namespace

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); i++) {
    const char c = text[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      const size_t n = utf8_length(text, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      } else {
        out.append(text, i, n);
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text; tabs and newlines are.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

Ticks linear_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    const double d = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  const double rough = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(rough)));
  const double norm = rough / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  Ticks t;
  t.step = step;
  // A little slack so that a value a rounding error past a tick does not add a whole step.
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  for (int i = 0;; i++) {
    double v = t.lo + i * step;
    if (v > t.hi + step * 1e-6) break;
    if (std::fabs(v) < step * 1e-9) v = 0.0;  // no "-0" or "1e-17" at the origin
    t.values.push_back(v);
  }
  return t;
}

Ticks log_ticks(double lo, double hi) {
  if (!(lo > 0)) lo = 1e-3;
  if (!(hi > lo)) hi = lo * 10;
  Ticks t;
  t.lo = lo;
  t.hi = hi;
  const int d0 = int(std::floor(std::log10(lo))), d1 = int(std::ceil(std::log10(hi)));
  for (const std::vector<double>& mult :
       {std::vector<double>{1}, std::vector<double>{1, 2, 5}, std::vector<double>{1, 2, 3, 5}}) {
    t.values.clear();
    for (int d = d0; d <= d1; d++)
      for (double m : mult) {
        const double v = m * std::pow(10.0, d);
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.values.push_back(v);
      }
    if (t.values.size() >= 3) break;
  }
  if (t.values.size() < 2) t.values = {lo, hi};
  return t;
}

std::string tick_label(double v, double step) {
  const double a = std::fabs(v);
  auto trimmed = [](std::string s) {
    if (s.find('.') != std::string::npos) {
      while (s.back() == '0') s.pop_back();
      if (s.back() == '.') s.pop_back();
    }
    return s;
  };
  if (a >= 1e9) return trimmed(fmt::format("{:.2f}", v / 1e9)) + "G";
  if (a >= 1e6) return trimmed(fmt::format("{:.2f}", v / 1e6)) + "M";
  if (a >= 1e4) return trimmed(fmt::format("{:.2f}", v / 1e3)) + "k";
  int decimals = 0;
  if (step > 0 && step < 1) decimals = std::min(6, int(std::ceil(-std::log10(step) - 1e-9)));
  if (step <= 0 && a > 0 && a < 1) decimals = std::min(6, int(std::ceil(-std::log10(a))) + 1);
  return trimmed(fmt::format("{:.{}f}", v, decimals));
}

std::string line_chart(const LineChart& c) {
  const double W = c.width, H = c.height, legend_w = 190;
  const Frame fr{72, 48, W - legend_w - 12, H - 58};
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const LineSeries& s : c.series)
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x);
      y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  const Ticks xt = linear_ticks(std::min(0.0, x0), x1, 6);
  const Ticks yt = linear_ticks(y0, y1, 5);
  const Scale xs{xt.lo, xt.hi, fr.left, fr.right};
  const Scale ys{yt.lo, yt.hi, fr.bottom, fr.top};
  std::string s = header(c.width, c.height, c.title) + title_text(c.title, "");
  s += y_axis(fr, ys, yt, {}, c.y_label);
  s += x_axis(fr, xs, xt, {}, c.x_label, false);
  for (const LineSeries& ser : c.series) {
    // At most ~800 vertices per line: more cannot be told apart at this width.
    const size_t n = ser.points.size(), every = std::max<size_t>(1, n / 800);
    std::string pts;
    for (size_t i = 0; i < n; i++) {
      if (i % every != 0 && i + 1 != n) continue;
      pts += fmt::format("{},{} ", num(xs(ser.points[i].first)), num(ys(ser.points[i].second)));
    }
    if (n > 1)
      s += fmt::format("<polyline class=\"series{}\" points=\"{}\" stroke=\"{}\"/>\n",
                       ser.dashed ? " dashed" : "", pts, ser.color);
    if (ser.markers || n == 1)
      for (const auto& [x, y] : ser.points)
        s += fmt::format("<circle class=\"marker\" cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\"/>\n",
                         num(xs(x)), num(ys(y)), ser.color);
  }
  // Legend: a sample of each line's style, beside the plot.
  double ly = fr.top + 6;
  const double lx = fr.right + 24;
  s += "<g class=\"legend\">\n";
  for (const LineSeries& ser : c.series) {
    s += fmt::format(
        "<line class=\"series{}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" "
        "stroke=\"{}\"/>\n",
        ser.dashed ? " dashed" : "", num(lx), num(ly), num(lx + 26), num(ly), ser.color);
    if (ser.markers)
      s += fmt::format("<circle class=\"marker\" cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{}\"/>\n",
                       num(lx + 13), num(ly), ser.color);
    s += fmt::format("<text class=\"legend-text\" x=\"{}\" y=\"{}\" dy=\"0.32em\">{}</text>\n",
                     num(lx + 34), num(ly), escape(truncate(ser.name, 24)));
    ly += 22;
  }
  s += "</g>\n</svg>\n";
  return s;
}

std::string bar_chart(const BarChart& c) {
  const double W = c.width, H = c.height;
  const Frame fr{58, 56, W - 14, H - 34};
  double lo = 0, hi = 0;
  for (const Bar& b : c.bars)
    if (std::isfinite(b.value)) lo = std::min(lo, b.value), hi = std::max(hi, b.value);
  if (hi == lo) hi = lo + 1;
  const Ticks yt = linear_ticks(lo, hi, 4);
  const Scale ys{yt.lo, yt.hi, fr.bottom, fr.top};
  std::string s = header(c.width, c.height, c.title) + title_text(c.title, c.subtitle);
  s += y_axis(fr, ys, yt, c.tick_format, "");
  const size_t n = std::max<size_t>(1, c.bars.size());
  const double slot = (fr.right - fr.left) / double(n);
  const double bw = std::min(56.0, slot * 0.62);
  const size_t max_chars = size_t(std::max(3.0, slot / 6.8));
  for (size_t i = 0; i < c.bars.size(); i++) {
    const Bar& b = c.bars[i];
    const double cx = fr.left + slot * (double(i) + 0.5);
    if (std::isfinite(b.value)) {
      const double y_top = ys(std::max(b.value, 0.0)), y_bot = ys(std::min(b.value, 0.0));
      // A zero (e.g. the teacher's KL to itself) still shows as a hairline.
      const double h = std::max(1.0, y_bot - y_top);
      s += fmt::format(
          "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
          "fill=\"{}\" rx=\"2\"><title>{}: {}</title></rect>\n",
          num(cx - bw / 2), num(y_bot - h), num(bw), num(h), b.color, escape(b.label),
          escape(b.value_text));
      s += fmt::format(
          "<text class=\"bar-value\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}"
          "</text>\n",
          num(cx), num(y_bot - h - 5), escape(b.value_text));
    } else {
      s += fmt::format(
          "<text class=\"bar-value muted\" x=\"{}\" y=\"{}\" "
          "text-anchor=\"middle\">not measured</text>\n",
          num(cx), num(fr.bottom - 6));
    }
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     num(cx), num(fr.bottom + 18), escape(truncate(b.label, max_chars)));
  }
  s += fmt::format("<line class=\"axis\" x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\"/>\n",
                   num(fr.left), num(fr.right), num(ys(0.0)));
  s += "</svg>\n";
  return s;
}

std::string scatter_chart(const ScatterChart& c) {
  const double W = c.width, H = c.height;
  const Frame fr{76, 64, W - 28, H - 58};
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const ScatterPoint& p : c.points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    if ((c.log_x && p.x <= 0) || (c.log_y && p.y <= 0)) continue;
    x0 = std::min(x0, p.x), x1 = std::max(x1, p.x);
    y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  }
  if (!std::isfinite(x0)) x0 = x1 = y0 = y1 = 1;
  const Ticks xt = padded_ticks(x0, x1, c.log_x, 5), yt = padded_ticks(y0, y1, c.log_y, 5);
  const Scale xs{xt.lo, xt.hi, fr.left, fr.right, c.log_x};
  const Scale ys{yt.lo, yt.hi, fr.bottom, fr.top, c.log_y};
  std::string s = header(c.width, c.height, c.title) + title_text(c.title, "");
  s += y_axis(fr, ys, yt, c.y_format, c.y_label);
  s += x_axis(fr, xs, xt, c.x_format, c.x_label, true);
  // Legend: one swatch per point, in a row under the title.
  double lx = 16;
  s += "<g class=\"legend\">\n";
  for (const ScatterPoint& p : c.points) {
    const std::string name = truncate(p.label, 18);
    s += fmt::format("<circle cx=\"{}\" cy=\"46\" r=\"5\" fill=\"{}\"/>\n", num(lx + 5), p.color);
    s += fmt::format("<text class=\"legend-text\" x=\"{}\" y=\"46\" dy=\"0.32em\">{}</text>\n",
                     num(lx + 14), escape(name));
    lx += 30 + 7.2 * double(name.size());
  }
  s += "</g>\n";
  // Points first, then their labels, each moved down (or up, near the bottom) past the labels
  // already placed so that models at the same spot stay readable.
  struct Box {
    double x0, x1, y;
  };
  std::vector<Box> placed;
  std::string labels;
  for (const ScatterPoint& p : c.points) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    if ((c.log_x && p.x <= 0) || (c.log_y && p.y <= 0)) continue;
    const double x = xs(p.x), y = ys(p.y);
    s += fmt::format(
        "<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"7\" fill=\"{}\">"
        "<title>{}</title></circle>\n",
        num(x), num(y), p.color, escape(p.label));
    const std::string text = truncate(p.label, 20);
    const double w = 7.5 * double(text.size());
    const bool right_side = x < fr.right - w - 16;
    const double x0 = right_side ? x + 12 : x - 12 - w, x1 = x0 + w;
    const double step = y > fr.bottom - 30 ? -15.0 : 15.0;
    double ly = y;
    for (bool moved = true; moved;) {
      moved = false;
      for (const Box& b : placed)
        if (x0 < b.x1 && b.x0 < x1 && std::fabs(ly - b.y) < 14) {
          ly += step;
          moved = true;
        }
    }
    placed.push_back({x0, x1, ly});
    labels += fmt::format(
        "<text class=\"point-label\" x=\"{}\" y=\"{}\" dy=\"0.32em\" "
        "text-anchor=\"{}\">{}</text>\n",
        num(right_side ? x + 12 : x - 12), num(ly), right_side ? "start" : "end", escape(text));
  }
  s += labels;
  s += "</svg>\n";
  return s;
}

}  // namespace distill::svg
