// Built-in model shapes, named so the CLI, the demo and the benchmarks agree on them.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace distill {

// Throws naming the known presets when `name` is not one.
ModelConfig model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

}  // namespace distill
