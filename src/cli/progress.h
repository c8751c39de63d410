// Terminal progress lines for long work: a redrawn bar on a terminal, and plain periodic lines
// when stderr is a file or a pipe (CI logs).
#pragma once
#include <string>

namespace distill::cli {

std::string format_duration(double seconds);  // "1h02m", "3m05s", "42s"
std::string format_count(double n);           // "950", "12.3k", "4.56M"

class ProgressBar {
 public:
  explicit ProgressBar(long total);
  // Redraws (terminal) or prints a line every ~5% (otherwise) with `status` after the bar.
  void update(long done, const std::string& status);
  // Ends the bar's line (terminal) and prints `line` on its own.
  void print(const std::string& line);
  void finish();

 private:
  long total_;
  bool tty_;
  long last_printed_ = -1;
  bool open_ = false;
};

}  // namespace distill::cli
