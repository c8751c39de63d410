// The server's counters, exposed at GET /metrics in the Prometheus text format (0.0.4).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "serve/engine.h"

namespace distill::serve {

class ServerMetrics {
 public:
  // One answered request.
  void record(const std::string& endpoint, int status, double latency_s, int64_t tokens_in,
              int64_t tokens_out);
  void rate_limited(const std::string& kind);  // "requests", "tokens", "queue"
  std::string prometheus(const EngineStats& engine) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;    // (endpoint, status) -> count
  std::map<std::string, std::pair<double, int64_t>> latency_;  // endpoint -> (sum s, count)
  std::map<std::string, int64_t> rate_limited_;
  int64_t tokens_in_ = 0, tokens_out_ = 0;
};

}  // namespace distill::serve
