// What a harvest costs: dollars per million input (prompt) and output (completion) tokens, from
// a pricing table (JSON: {"model name": {"input": 0.15, "output": 0.60}, ...}) or given directly.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace distill::harvest {

struct Price {
  double input_per_mtok = 0.0, output_per_mtok = 0.0;
  double cost(int64_t input_tokens, int64_t output_tokens) const {
    return (double(input_tokens) * input_per_mtok + double(output_tokens) * output_per_mtok) / 1e6;
  }
};

// The price of `model` in the table at `path`; nothing when the table has no entry for it.
// Errors name the file and the bad entry.
std::optional<Price> load_price(const std::string& path, const std::string& model);

}  // namespace distill::harvest
