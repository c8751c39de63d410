#include "tokenizer/post_processor.h"

#include "tokenizer/hf_json.h"

namespace distill {
namespace {

using namespace hf_json;

// A ["<s>", 0] pair of RobertaProcessing/BertProcessing.
int32_t token_pair_id(const json& j, std::string_view key, const std::string& path) {
  const std::string p = child(path, key);
  const json& pair = require_array(field(j, key, path), p);
  if (pair.size() != 2 || !pair[0].is_string() || !pair[1].is_number_integer() ||
      pair[1].get<int64_t>() < 0 || pair[1].get<int64_t>() > INT32_MAX)
    throw Error("{}: expected [\"token\", id], found {}", p, pair.dump());
  return int32_t(pair[1].get<int64_t>());
}

}  // namespace

SpecialTemplate special_template_from_json(const json& j, const std::string& path) {
  const std::string type = type_of(j, path);
  SpecialTemplate result;
  if (type == "ByteLevel") return result;
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    result.prefix.push_back(token_pair_id(j, "cls", path));
    result.suffix.push_back(token_pair_id(j, "sep", path));
    return result;
  }
  if (type == "TemplateProcessing") {
    const std::string single_path = child(path, "single");
    const json& single = require_array(field(j, "single", path), single_path);
    const std::string specials_path = child(path, "special_tokens");
    const json& specials = require_object(field(j, "special_tokens", path), specials_path);
    bool after_sequence = false;
    for (size_t i = 0; i < single.size(); i++) {
      const std::string item_path = child(single_path, i);
      const json& item = require_object(single[i], item_path);
      if (item.contains("Sequence")) {
        after_sequence = true;
        continue;
      }
      const std::string special_path = child(item_path, "SpecialToken");
      const json& special = require_object(field(item, "SpecialToken", item_path), special_path);
      const std::string name = string_field(special, "id", special_path);
      auto it = specials.find(name);
      if (it == specials.end())
        throw Error("{}: special token \"{}\" is not defined in {}", special_path, name,
                    specials_path);
      const std::string ids_path = child(child(specials_path, name), "ids");
      const json& ids = require_array(field(*it, "ids", child(specials_path, name)), ids_path);
      for (const json& id : ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          throw Error("{}: expected non-negative integer ids, found {}", ids_path, id.dump());
        (after_sequence ? result.suffix : result.prefix).push_back(int32_t(id.get<int64_t>()));
      }
    }
    return result;
  }
  if (type == "Sequence") {
    const std::string list_path = child(path, "processors");
    const json& list = require_array(field(j, "processors", path), list_path);
    for (size_t i = 0; i < list.size(); i++) {
      // Each processor wraps what the ones before it produced.
      SpecialTemplate step = special_template_from_json(list[i], child(list_path, i));
      step.prefix.insert(step.prefix.end(), result.prefix.begin(), result.prefix.end());
      result.prefix = std::move(step.prefix);
      result.suffix.insert(result.suffix.end(), step.suffix.begin(), step.suffix.end());
    }
    return result;
  }
  throw Error(
      "{}: post-processor type \"{}\" is not supported (supported: TemplateProcessing, "
      "RobertaProcessing, BertProcessing, ByteLevel, Sequence)",
      path, type);
}

}  // namespace distill
