#include "harvest/pricing.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace distill::harvest {

std::optional<Price> load_price(const std::string& path, const std::string& model) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot open the pricing table: {}", path, std::strerror(errno));
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw Error(
        "{}: expected a JSON object {{\"model\": {{\"input\": $/Mtok, \"output\": $/Mtok}}}}",
        path);
  if (!j.contains(model)) return std::nullopt;
  const nlohmann::json& e = j[model];
  auto field = [&](const char* name) {
    if (!e.is_object() || !e.contains(name) || !e[name].is_number() || e[name].get<double>() < 0)
      throw Error("{}: \"{}\" needs a non-negative number \"{}\" (dollars per million tokens)",
                  path, model, name);
    return e[name].get<double>();
  };
  return Price{field("input"), field("output")};
}

}  // namespace distill::harvest
