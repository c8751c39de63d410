#include "harvest/pacing.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace distill::harvest {

RatePacer::RatePacer(double per_minute)
    : capacity_(per_minute),
      rate_per_s_(per_minute / 60.0),
      last_(std::chrono::steady_clock::now()) {}

void RatePacer::drain(std::chrono::steady_clock::time_point now) {
  const double dt = std::chrono::duration<double>(now - last_).count();
  level_ = std::max(0.0, level_ - dt * rate_per_s_);
  last_ = now;
}

bool RatePacer::acquire(double amount, const std::atomic<bool>& stop) {
  if (capacity_ <= 0.0) return !stop;
  for (;;) {
    if (stop) return false;
    double wait_s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      drain(std::chrono::steady_clock::now());
      if (level_ + amount <= capacity_ || level_ <= 0.0) {
        level_ += amount;
        return true;
      }
      wait_s = (level_ + std::min(amount, capacity_) - capacity_) / rate_per_s_;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(std::clamp(wait_s, 0.005, 0.25)));
  }
}

void RatePacer::adjust(double delta) {
  if (capacity_ <= 0.0) return;
  std::lock_guard<std::mutex> lock(mu_);
  drain(std::chrono::steady_clock::now());
  level_ = std::max(0.0, level_ + delta);
}

double backoff_delay(int attempt, double base_s, double max_s, double retry_after_s, Rng& rng) {
  const double exp = std::min(max_s, base_s * std::pow(2.0, std::min(attempt, 30)));
  const double jittered = exp / 2.0 + rng.uniform() * exp / 2.0;
  return std::max(jittered, retry_after_s >= 0.0 ? retry_after_s : 0.0);
}

}  // namespace distill::harvest
