#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>
#include <fmt/format.h>

namespace distill::cli {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const long t = long(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string format_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e4) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

ProgressBar::ProgressBar(long total) : total_(total > 0 ? total : 1), tty_(isatty(2)) {}

void ProgressBar::update(long done, const std::string& status) {
  if (tty_) {
    const int width = 24;
    const int filled = int(double(done) / total_ * width);
    std::string bar(width, ' ');
    for (int i = 0; i < filled && i < width; i++) bar[i] = '=';
    if (filled < width) bar[filled] = '>';
    std::fprintf(stderr, "\r\033[K[%s] %s", bar.c_str(), status.c_str());
    std::fflush(stderr);
    open_ = true;
    return;
  }
  const long every = total_ >= 20 ? total_ / 20 : 1;
  if (done == total_ || last_printed_ < 0 || done - last_printed_ >= every) {
    std::fprintf(stderr, "%s\n", status.c_str());
    last_printed_ = done;
  }
}

void ProgressBar::print(const std::string& line) {
  if (open_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", line.c_str());
  open_ = false;
}

void ProgressBar::finish() {
  if (open_) std::fprintf(stderr, "\n");
  open_ = false;
}

}  // namespace distill::cli
