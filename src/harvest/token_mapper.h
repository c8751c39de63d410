// Maps an endpoint's tokens (their bytes) onto a local tokenizer's ids, so a harvested teacher's
// top-k log-probabilities can be stored as ids for offline distillation when the endpoint uses
// the same vocabulary.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "tokenizer/tokenizer.h"

namespace distill::harvest {

class TokenMapper {
 public:
  // Indexes decode({id}) of every non-special id; when several ids decode alike, the lowest wins.
  explicit TokenMapper(const Tokenizer& tok);
  std::optional<int32_t> id(const std::string& bytes) const;

 private:
  std::unordered_map<std::string, int32_t> ids_;
};

}  // namespace distill::harvest
