// metrics.jsonl: one JSON object per line, appended as training goes (steps, held-out losses).
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace distill {

// On resume, drops the lines past the checkpoint's step (written by the interrupted run after
// its last checkpoint) and any line cut short by a kill, so the file reads as one run.
void truncate_metrics(const std::string& path, int64_t step);

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& j);  // one line, flushed

 private:
  std::FILE* f_;
  std::string path_;
};

}  // namespace distill
