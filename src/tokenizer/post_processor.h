// Hugging Face post-processors, reduced to what they do to one sequence when
// add_special_tokens is set: ids put before it (e.g. BOS) and after it (e.g. EOS).
// TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel (adds nothing), Sequence.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill {

struct SpecialTemplate {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

// From a tokenizer.json "post_processor" value (not null); `path` is its JSON path, for errors.
SpecialTemplate special_template_from_json(const nlohmann::json& j, const std::string& path);

}  // namespace distill
