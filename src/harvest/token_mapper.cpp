#include "harvest/token_mapper.h"

namespace distill::harvest {

TokenMapper::TokenMapper(const Tokenizer& tok) {
  for (int32_t id = 0; id < tok.vocab_size(); id++) {
    if (tok.is_special(id)) continue;
    ids_.emplace(tok.decode({id}), id);  // emplace keeps the first (lowest) id
  }
}

std::optional<int32_t> TokenMapper::id(const std::string& bytes) const {
  auto it = ids_.find(bytes);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

}  // namespace distill::harvest
