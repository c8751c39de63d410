// Errors: the library throws distill::Error and never prints or exits; src/cli turns it into
// "error: <what>" on stderr and a non-zero exit code.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace distill {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  template <typename... Args>
  Error(fmt::format_string<Args...> f, Args&&... args)
      : std::runtime_error(fmt::format(f, std::forward<Args>(args)...)) {}
};

}  // namespace distill

// An invariant that only a bug in distill can break (not bad input: that is a distill::Error with
// the file/tensor/line named).
#define DISTILL_CHECK(cond)                                                                  \
  do {                                                                                       \
    if (!(cond))                                                                             \
      throw ::distill::Error("internal error: check failed: {} ({}:{})", #cond, __FILE__, \
                             __LINE__);                                                      \
  } while (0)
