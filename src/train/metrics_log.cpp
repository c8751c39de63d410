#include "train/metrics_log.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/file.h"

namespace distill {

void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line cut short by the kill
    if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept.data(), kept.size());
}

MetricsLog::MetricsLog(const std::string& path) : f_(std::fopen(path.c_str(), "a")), path_(path) {
  if (!f_) throw Error("{}: cannot open for appending: {}", path, std::strerror(errno));
}

MetricsLog::~MetricsLog() { std::fclose(f_); }

void MetricsLog::write(const nlohmann::json& j) {
  // Invalid UTF-8 in a string (a byte-level model's sampled text) becomes U+FFFD, not an error.
  const std::string line =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw Error("{}: write failed: {}", path_, std::strerror(errno));
}

}  // namespace distill
