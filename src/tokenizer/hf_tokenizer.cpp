#include "tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "core/file.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/pipeline_tokenizer.h"

namespace distill {
namespace {

using namespace hf_json;

// What the model of a tokenizer.json is, when it does not say ("type" is optional in old files).
std::string model_type(const json& model) {
  if (const json* t = optional_field(model, "type")) {
    if (!t->is_string()) throw Error("/model/type: expected a string, found {}", kind_of(*t));
    return t->get<std::string>();
  }
  if (model.contains("merges")) return "BPE";
  if (model.contains("vocab") && model["vocab"].is_array()) return "Unigram";
  if (model.contains("max_input_chars_per_word")) return "WordPiece";
  return "WordLevel";
}

std::vector<std::pair<std::string, int32_t>> parse_vocab(const json& model) {
  const json& vocab = require_object(field(model, "vocab", "/model"), "/model/vocab");
  std::vector<std::pair<std::string, int32_t>> out;
  out.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX)
      throw Error("/model/vocab/{}: expected a non-negative integer id, found {}", it.key(),
                  it.value().dump());
    out.emplace_back(it.key(), it.value().get<int32_t>());
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_merges(const json& model) {
  const json& merges = require_array(field(model, "merges", "/model"), "/model/merges");
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); i++) {
    const json& m = merges[i];
    if (m.is_string()) {
      // "left right": exactly one space (tokens of this form cannot contain spaces).
      const std::string& s = m.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        throw Error("/model/merges/{}: expected \"left right\", found \"{}\"", i, s);
      out.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw Error("/model/merges/{}: expected \"left right\" or [\"left\", \"right\"], found {}",
                  i, m.dump());
    }
  }
  return out;
}

std::optional<std::string> optional_string(const json& obj, std::string_view key,
                                           const std::string& path) {
  const json* v = optional_field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string())
    throw Error("{}: expected a string or null, found {}", child(path, key), kind_of(*v));
  return v->get<std::string>();
}

std::vector<AddedToken> parse_added_tokens(const json& root) {
  std::vector<AddedToken> out;
  const json* list = optional_field(root, "added_tokens");
  if (list == nullptr) return out;
  require_array(*list, "/added_tokens");
  for (size_t i = 0; i < list->size(); i++) {
    const std::string path = child("/added_tokens", i);
    const json& t = require_object((*list)[i], path);
    AddedToken token;
    int64_t id = int_field(t, "id", path);
    if (id < 0 || id > INT32_MAX) throw Error("{}/id: {} is not a valid id", path, id);
    token.id = int32_t(id);
    token.content = string_field(t, "content", path);
    token.special = bool_or(t, "special", path, false);
    token.single_word = bool_or(t, "single_word", path, false);
    token.lstrip = bool_or(t, "lstrip", path, false);
    token.rstrip = bool_or(t, "rstrip", path, false);
    token.normalized = bool_or(t, "normalized", path, !token.special);
    out.push_back(std::move(token));
  }
  return out;
}

// BOS/EOS from tokenizer_config.json ("bos_token": "<s>" or {"content": "<s>", ...}).
std::optional<int32_t> config_token(const json* config, const char* key,
                                    const PipelineParts& parts) {
  if (config == nullptr || !config->is_object()) return std::nullopt;
  const json* v = optional_field(*config, key);
  if (v == nullptr) return std::nullopt;
  std::string content;
  if (v->is_string()) content = v->get<std::string>();
  else if (v->is_object() && v->contains("content") && (*v)["content"].is_string())
    content = (*v)["content"].get<std::string>();
  else return std::nullopt;
  for (const AddedToken& t : parts.added_tokens)
    if (t.content == content) return t.id;
  return parts.model->token_id(content);
}

std::string fingerprint_of(const json& root, const std::string& model_kind, const BpeConfig& config,
                           std::vector<std::pair<std::string, int32_t>> vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::vector<AddedToken>& added, const SpecialTemplate& special) {
  FingerprintBuilder fp;
  fp.add("distill-tokenizer/hf-bpe/v1").add(model_kind);
  auto dump = [&](const char* key) {
    const json* v = optional_field(root, key);
    fp.add(v == nullptr ? std::string("null") : v->dump());  // keys sorted: canonical
  };
  dump("normalizer");
  dump("pre_tokenizer");
  fp.add(int64_t(config.byte_fallback)).add(int64_t(config.fuse_unk))
      .add(int64_t(config.ignore_merges)).add(config.unk_token.value_or("\x01none"))
      .add(config.continuing_subword_prefix).add(config.end_of_word_suffix);
  std::sort(vocab.begin(), vocab.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  fp.add(int64_t(vocab.size()));
  for (const auto& [text, id] : vocab) fp.add(id).add(text);
  fp.add(int64_t(merges.size()));
  for (const auto& [left, right] : merges) fp.add(left).add(right);
  fp.add(int64_t(added.size()));
  for (const AddedToken& t : added)
    fp.add(t.id).add(t.content).add(int64_t(t.special) | int64_t(t.single_word) << 1 |
                                    int64_t(t.lstrip) << 2 | int64_t(t.rstrip) << 3 |
                                    int64_t(t.normalized) << 4);
  fp.add(int64_t(special.prefix.size()));
  for (int32_t id : special.prefix) fp.add(id);
  fp.add(int64_t(special.suffix.size()));
  for (int32_t id : special.suffix) fp.add(id);
  return fp.hex();
}

// Components nest (Sequence of Sequence ...) and are built recursively: a file nested deeper than
// any real tokenizer is refused before it can exhaust the stack.
void check_depth(const json& root) {
  constexpr int kMaxDepth = 64;
  std::vector<std::pair<const json*, int>> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [j, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxDepth) throw Error("/: nested more than {} levels deep", kMaxDepth);
    if (j->is_structured())
      for (const json& child : *j) stack.push_back({&child, depth + 1});
  }
}

std::unique_ptr<Tokenizer> build(const json& root, const json* tokenizer_config) {
  require_object(root, "/");
  check_depth(root);
  const json& model = require_object(field(root, "model", "/"), "/model");
  const std::string type = model_type(model);
  if (type != "BPE")
    throw Error("/model/type: model type \"{}\" is not supported (supported: BPE; use the "
                "SentencePiece .model file for Unigram models)",
                type);
  if (const json* d = optional_field(model, "dropout"))
    if (!d->is_number() || d->get<double>() != 0.0)
      throw Error("/model/dropout: BPE dropout ({}) is not supported", d->dump());

  BpeConfig config;
  config.byte_fallback = bool_or(model, "byte_fallback", "/model", false);
  config.fuse_unk = bool_or(model, "fuse_unk", "/model", false);
  config.ignore_merges = bool_or(model, "ignore_merges", "/model", false);
  config.unk_token = optional_string(model, "unk_token", "/model");
  config.continuing_subword_prefix =
      optional_string(model, "continuing_subword_prefix", "/model").value_or("");
  config.end_of_word_suffix = optional_string(model, "end_of_word_suffix", "/model").value_or("");

  PipelineParts parts;
  parts.kind = "hf-bpe";
  if (const json* n = optional_field(root, "normalizer"))
    parts.normalizer = normalizer_from_json(*n, "/normalizer");
  if (const json* p = optional_field(root, "pre_tokenizer")) {
    // The byte→character mapping of a final ByteLevel step is left to the model (it then works
    // on raw bytes), unless subword affixes need the character form.
    const bool can_defer =
        config.continuing_subword_prefix.empty() && config.end_of_word_suffix.empty();
    bool deferred = false;
    parts.pre_tokenizer = pre_tokenizer_from_json(*p, "/pre_tokenizer", can_defer, &deferred);
    config.byte_level = deferred;
  }
  const auto vocab = parse_vocab(model);
  const auto merges = parse_merges(model);
  parts.model = std::make_unique<BpeModel>(vocab, merges, config, "/model/merges");
  parts.added_tokens = parse_added_tokens(root);
  if (const json* p = optional_field(root, "post_processor"))
    parts.special_template = special_template_from_json(*p, "/post_processor");
  if (const json* d = optional_field(root, "decoder"))
    parts.decoder = decoder_from_json(*d, "/decoder");
  parts.fingerprint = fingerprint_of(root, type, config, vocab, merges, parts.added_tokens,
                                     parts.special_template);
  // BOS/EOS: tokenizer_config.json names them; otherwise the template's first and last ids.
  parts.bos = config_token(tokenizer_config, "bos_token", parts);
  parts.eos = config_token(tokenizer_config, "eos_token", parts);
  if (!parts.bos && !parts.special_template.prefix.empty())
    parts.bos = parts.special_template.prefix.front();
  if (!parts.eos && !parts.special_template.suffix.empty())
    parts.eos = parts.special_template.suffix.back();
  auto tokenizer = std::make_unique<PipelineTokenizer>(std::move(parts));
  return tokenizer;
}

}  // namespace

std::unique_ptr<Tokenizer> hf_tokenizer_from_json(std::string_view json_text,
                                                  const std::string& source,
                                                  const json* tokenizer_config) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for huge numbers
    throw Error("{}: not valid JSON: {}", source, e.what());
  }
  try {
    return build(root, tokenizer_config);
  } catch (const Error& e) {
    throw Error("{}: {}", source, e.what());
  } catch (const json::exception& e) {  // a value of a type the checks above did not expect
    throw Error("{}: {}", source, e.what());
  }
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) {
  const std::string text = read_file_text(path);
  json config;
  bool have_config = false;
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    try {
      config = json::parse(read_file_text(config_path.string()));
      have_config = true;
    } catch (const json::exception& e) {
      throw Error("{}: not valid JSON: {}", config_path.string(), e.what());
    }
  }
  return hf_tokenizer_from_json(text, path, have_config ? &config : nullptr);
}

}  // namespace distill
