// Deliberate faults for testing clients (distill harvest) against an unreliable endpoint:
// `distill serve --inject-faults "429=0.1,500=0.1,malformed=0.05,truncated=0.05,slow=0.05"`.
// Each generation request draws at most one fault (seeded, so a run is reproducible):
//   429        a rate-limit answer with Retry-After; with 429_burst=K the next K-1 requests get
//              one too (a burst, as a provider's limiter gives)
//   500        an internal-server-error answer
//   malformed  200 with a body that is not JSON
//   truncated  200 whose body stops halfway (the connection closes early)
//   slow       the answer is delayed by slow_ms
// Off unless asked for; never meant for production.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>

#include "core/rng.h"

namespace distill::serve {

enum class Fault { None, RateLimit, ServerError, Malformed, Truncated, Slow };

struct FaultOptions {
  double rate_limit = 0.0, server_error = 0.0, malformed = 0.0, truncated = 0.0, slow = 0.0;
  int rate_limit_burst = 1;  // 429s in a row once one is drawn
  int slow_ms = 3000;
  int retry_after_s = 1;  // the Retry-After of injected 429s
  uint64_t seed = 1;
  bool any() const { return rate_limit + server_error + malformed + truncated + slow > 0.0; }
};

// "429=0.1,429_burst=5,500=0.05,malformed=0.02,truncated=0.02,slow=0.02,slow_ms=2000,
// retry_after=1,seed=7";
// errors name the bad item.
FaultOptions parse_fault_spec(const std::string& spec);

class FaultInjector {
 public:
  explicit FaultInjector(const FaultOptions& o) : o_(o), rng_(o.seed) {}
  Fault draw();
  const FaultOptions& options() const { return o_; }

 private:
  FaultOptions o_;
  std::mutex mu_;
  Rng rng_;
  int burst_left_ = 0;
};

}  // namespace distill::serve
