#include "serve/fault_injection.h"

#include <sstream>

#include "core/error.h"

namespace distill::serve {

FaultOptions parse_fault_spec(const std::string& spec) {
  FaultOptions o;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw Error("--inject-faults: '{}' is not name=value", item);
    const std::string name = item.substr(0, eq), value = item.substr(eq + 1);
    double v = 0.0;
    try {
      size_t used = 0;
      v = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw Error("--inject-faults: '{}' needs a number, got '{}'", name, value);
    }
    auto probability = [&](double& field) {
      if (!(v >= 0.0 && v <= 1.0))
        throw Error("--inject-faults: '{}' is a probability in [0, 1], got {}", name, v);
      field = v;
    };
    if (name == "429")
      probability(o.rate_limit);
    else if (name == "500")
      probability(o.server_error);
    else if (name == "malformed")
      probability(o.malformed);
    else if (name == "truncated")
      probability(o.truncated);
    else if (name == "slow")
      probability(o.slow);
    else if (name == "slow_ms" && v >= 0 && v <= 600000)
      o.slow_ms = int(v);
    else if (name == "429_burst" && v >= 1 && v <= 1000)
      o.rate_limit_burst = int(v);
    else if (name == "retry_after" && v >= 0 && v <= 3600)
      o.retry_after_s = int(v);
    else if (name == "seed" && v >= 0)
      o.seed = uint64_t(v);
    else
      throw Error(
          "--inject-faults: unknown or out-of-range item '{}' (known: 429, 500, malformed, "
          "truncated, slow, slow_ms, 429_burst, retry_after, seed)",
          item);
  }
  if (o.rate_limit + o.server_error + o.malformed + o.truncated + o.slow > 1.0)
    throw Error("--inject-faults: the probabilities add up to more than 1");
  return o;
}

Fault FaultInjector::draw() {
  double u;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (burst_left_ > 0) {
      burst_left_--;
      return Fault::RateLimit;
    }
    u = rng_.uniform();
    if (u < o_.rate_limit) {
      burst_left_ = o_.rate_limit_burst - 1;
      return Fault::RateLimit;
    }
  }
  const std::pair<double, Fault> table[] = {{o_.rate_limit, Fault::RateLimit},
                                            {o_.server_error, Fault::ServerError},
                                            {o_.malformed, Fault::Malformed},
                                            {o_.truncated, Fault::Truncated},
                                            {o_.slow, Fault::Slow}};
  for (const auto& [p, f] : table) {
    if (u < p) return f;
    u -= p;
  }
  return Fault::None;
}

}  // namespace distill::serve
