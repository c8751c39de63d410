// Client-side pacing: leaky buckets for requests and tokens per minute (so a harvest stays under
// an endpoint's limits instead of bouncing off them), and the retry delay: exponential backoff
// with jitter, never shorter than the server's Retry-After.
#pragma once
#include <atomic>
#include <chrono>
#include <mutex>

#include "core/rng.h"

namespace distill::harvest {

class RatePacer {
 public:
  // per_minute <= 0: unlimited.
  explicit RatePacer(double per_minute);
  // Waits until `amount` fits under the limit (a single amount larger than the limit waits for an
  // empty bucket), then takes it. Returns false without taking it when `stop` becomes true.
  bool acquire(double amount, const std::atomic<bool>& stop);
  // Corrects a taken estimate once the real amount is known (may be negative).
  void adjust(double delta);

 private:
  void drain(std::chrono::steady_clock::time_point now);
  double capacity_, rate_per_s_;
  double level_ = 0.0;
  std::chrono::steady_clock::time_point last_;
  std::mutex mu_;
};

// Attempt `attempt` (0-based) failed: seconds to wait before the next one. Exponential from
// base_s, capped at max_s, with "equal jitter" (half fixed, half uniform: spreads clients that
// failed together without ever retrying immediately), and at least retry_after_s when the
// server sent one (>= 0).
double backoff_delay(int attempt, double base_s, double max_s, double retry_after_s, Rng& rng);

}  // namespace distill::harvest
