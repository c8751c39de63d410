// `distill harvest` (placeholder while src/harvest is written).
#include "cli/verbs.h"
#include "core/error.h"
namespace distill::cli {
VerbRun add_harvest(CLI::App& app) {
  return []() -> int { throw Error("harvest: not implemented yet"); };
}
}  // namespace distill::cli
