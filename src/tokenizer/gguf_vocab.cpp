#include "tokenizer/gguf_vocab.h"

#include <cstdio>
#include <map>

#include "core/error.h"
#include "tokenizer/fingerprint.h"
#include "tokenizer/gguf_spm.h"
#include "tokenizer/pipeline_tokenizer.h"

namespace distill {
namespace {

// The Llama 3 / Qwen 2 family of patterns differ only in how many digits make a word.
std::string llama3_style(const char* digits) {
  return std::string("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|") + digits +
         "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
}

struct PreType {
  std::vector<std::string> regexes;  // on the text, each isolating its matches, in order
  bool ignore_merges = false;        // a word that is a token is that token (Llama 3)
  // Falcon's tokenizer.json splits again after its ByteLevel step, on the byte characters (so
  // "½", bytes C2 BD shown as "Â½", splits before the numeric "½"): these regexes run there,
  // after the GPT-2 split, and the model then works on characters.
  std::vector<std::string> after_byte_level = {};
};

// tokenizer.ggml.pre name -> the regexes of the Hugging Face tokenizer it was converted from (the
// patterns llama.cpp's llama-vocab.cpp adapts to its own regex engine, in their original form).
const std::map<std::string, PreType>& pre_types() {
  static const std::map<std::string, PreType> table = [] {
    const std::string gpt2 = kGpt2Pattern;
    const PreType gpt2_type{{gpt2}};
    const PreType llama3{{llama3_style("\\p{N}{1,3}")}, true};
    const PreType llama3_keep_merges{{llama3_style("\\p{N}{1,3}")}, false};
    const PreType qwen2{{llama3_style("\\p{N}")}};
    const PreType starcoder{{"\\p{N}", gpt2}};
    const PreType bloom{{" ?[^(\\s|.,!?…。，、।۔،)]+"}};
    std::map<std::string, PreType> t;
    for (const char* name : {"gpt-2", "gpt2", "mpt", "olmo", "jais", "phi-2", "roberta-bpe"})
      t[name] = gpt2_type;
    for (const char* name : {"llama3", "llama-v3", "llama-bpe", "falcon3"}) t[name] = llama3;
    for (const char* name : {"dbrx", "smaug-bpe", "chatglm-bpe"}) t[name] = llama3_keep_merges;
    for (const char* name : {"qwen2", "stablelm2", "megrez"}) t[name] = qwen2;
    for (const char* name : {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                             "minerva-7b"})
      t[name] = starcoder;
    for (const char* name : {"poro-chat", "bloom", "gpt3-finnish"}) t[name] = bloom;
    t["viking"] = {{bloom.regexes[0], "\\p{N}"}};
    t["default"] = {{"[\\p{P}\\$\\+<=>\\^~\\|]+", gpt2, "\\p{N}+", "[0-9][0-9][0-9]"}};
    t["falcon"] = {{"[\\p{P}\\$\\+<=>\\^~\\|`]+"}, false, {"\\p{N}+", "[0-9][0-9][0-9]"}};
    t["deepseek-llm"] = {{
        "[\r\n]",
        "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293"
        "\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C"
        "\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0"
        "-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-"
        "\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B"
        "\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-"
        "\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113"
        "\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F"
        "\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3"
        "\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00"
        "-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-"
        "\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-"
        "\U000118DF\U0001E900-\U0001E943]+",
        "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
        "\\s+$",
        "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
        "\\p{N}+",
    }};
    t["deepseek-coder"] = {{"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
                            "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+", "\\p{N}"}};
    t["deepseek-v3"] = {{
        "\\p{N}{1,3}",
        "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"
        "[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    }};
    t["tekken"] = {{"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}"
                    "\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+["
                    "\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*["
                    "\\r\\n]+|\\s+(?!\\S)|\\s+"},
                   true};
    return t;
  }();
  return table;
}

const PreType& pre_type(const std::string& pre) {
  auto it = pre_types().find(pre);
  if (it == pre_types().end()) {
    std::string names;
    for (const auto& [name, type] : pre_types()) names += (names.empty() ? "" : ", ") + name;
    throw Error("tokenizer.ggml.pre \"{}\" is not supported (supported: {})", pre, names);
  }
  return it->second;
}

std::optional<int32_t> optional_id(const GgufFile& file, const char* key, size_t n_tokens) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return std::nullopt;
  int64_t id = v->as_int(key);
  if (id < 0) return std::nullopt;  // some converters write -1 for "none"
  if (size_t(id) >= n_tokens)
    throw Error("{}: {} = {} is outside the vocabulary of {} tokens", file.path(), key, id,
                n_tokens);
  return int32_t(id);
}

bool optional_bool(const GgufFile& file, const char* key, bool fallback) {
  const GgufValue* v = file.find(key);
  return v == nullptr ? fallback : v->as_bool(key);
}

std::vector<VocabTokenType> token_types(const GgufFile& file, size_t n_tokens) {
  std::vector<VocabTokenType> types(n_tokens, VocabTokenType::Normal);
  if (const GgufValue* v = file.find("tokenizer.ggml.token_type")) {
    std::vector<int64_t> raw = v->as_ints("tokenizer.ggml.token_type");
    if (raw.size() != n_tokens)
      throw Error("{}: tokenizer.ggml.token_type has {} entries for {} tokens", file.path(),
                  raw.size(), n_tokens);
    for (size_t i = 0; i < n_tokens; i++) {
      if (raw[i] < 1 || raw[i] > 6)
        throw Error("{}: tokenizer.ggml.token_type[{}] = {} is not a token type (1..6)",
                    file.path(), i, raw[i]);
      types[i] = VocabTokenType(raw[i]);
    }
  }
  return types;
}

std::unique_ptr<Tokenizer> gpt2_tokenizer(const GgufFile& file,
                                          const std::vector<std::string>& tokens,
                                          const std::vector<VocabTokenType>& types) {
  const GgufValue* pre_value = file.find("tokenizer.ggml.pre");
  const std::string pre = pre_value ? pre_value->as_string("tokenizer.ggml.pre") : "default";
  const PreType& type = pre_type(pre);
  std::vector<std::pair<std::string, std::string>> merges;
  if (const GgufValue* m = file.find("tokenizer.ggml.merges")) {
    const std::vector<std::string> lines = m->as_strings("tokenizer.ggml.merges");
    merges.reserve(lines.size());
    for (size_t i = 0; i < lines.size(); i++) {
      const size_t space = lines[i].find(' ', 1);  // a token may start with a space
      if (space == std::string::npos)
        throw Error("{}: tokenizer.ggml.merges[{}] = \"{}\" is not \"left right\"", file.path(),
                    i, lines[i]);
      merges.emplace_back(lines[i].substr(0, space), lines[i].substr(space + 1));
    }
  }
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(tokens.size());
  PipelineParts parts;
  parts.kind = "gguf-gpt2";
  for (size_t id = 0; id < tokens.size(); id++) {
    vocab.emplace_back(tokens[id], int32_t(id));
    // Control and unknown tokens are text unless parse_special; user-defined ones always match.
    const VocabTokenType t = types[id];
    if (t == VocabTokenType::Control || t == VocabTokenType::Unknown ||
        t == VocabTokenType::UserDefined)
      parts.added_tokens.push_back({int32_t(id), tokens[id], t != VocabTokenType::UserDefined,
                                    false, false, false, false});
  }
  const bool bytes_last = type.after_byte_level.empty();
  BpeConfig config;
  config.byte_level = bytes_last;  // else the model sees the byte characters themselves
  config.ignore_merges = type.ignore_merges;
  parts.model = std::make_unique<BpeModel>(vocab, merges, config,
                                           file.path() + ": tokenizer.ggml.merges");
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  for (const std::string& regex : type.regexes)
    steps.push_back(make_regex_split(regex, SplitBehavior::Isolated, false));
  if (bytes_last) {
    steps.push_back(make_byte_level(false, false, /*map_bytes=*/false));
  } else {
    steps.push_back(make_byte_level(false, /*use_regex=*/true, /*map_bytes=*/true));
    for (const std::string& regex : type.after_byte_level)
      steps.push_back(make_regex_split(regex, SplitBehavior::Isolated, false));
  }
  parts.pre_tokenizer = make_sequence(std::move(steps));
  parts.decoder = make_byte_level_decoder();
  parts.added_tokens_skip_decoder = true;  // llama.cpp shows added tokens as written
  parts.bos = optional_id(file, "tokenizer.ggml.bos_token_id", tokens.size());
  parts.eos = optional_id(file, "tokenizer.ggml.eos_token_id", tokens.size());
  const bool add_bos = optional_bool(file, "tokenizer.ggml.add_bos_token", false);
  const bool add_eos = optional_bool(file, "tokenizer.ggml.add_eos_token", false);
  if (add_bos && parts.bos) parts.special_template.prefix.push_back(*parts.bos);
  if (add_eos && parts.eos) parts.special_template.suffix.push_back(*parts.eos);

  FingerprintBuilder fp;
  fp.add("distill-tokenizer/gguf-gpt2/v1").add(pre).add(int64_t(tokens.size()));
  for (size_t id = 0; id < tokens.size(); id++) fp.add(tokens[id]).add(int64_t(types[id]));
  fp.add(int64_t(merges.size()));
  for (const auto& [left, right] : merges) fp.add(left).add(right);
  fp.add(parts.bos.value_or(-1)).add(parts.eos.value_or(-1)).add(int64_t(add_bos))
      .add(int64_t(add_eos));
  parts.fingerprint = fp.hex();
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

std::unique_ptr<Tokenizer> llama_tokenizer(const GgufFile& file,
                                           const std::vector<std::string>& tokens,
                                           std::vector<VocabTokenType> types) {
  SpmVocab v;
  v.tokens = tokens;
  v.types = std::move(types);
  if (const GgufValue* s = file.find("tokenizer.ggml.scores")) {
    v.scores = s->as_floats("tokenizer.ggml.scores");
    if (v.scores.size() != tokens.size())
      throw Error("{}: tokenizer.ggml.scores has {} entries for {} tokens", file.path(),
                  v.scores.size(), tokens.size());
  } else {
    v.scores.assign(tokens.size(), 0.0f);
  }
  v.bos = optional_id(file, "tokenizer.ggml.bos_token_id", tokens.size());
  v.eos = optional_id(file, "tokenizer.ggml.eos_token_id", tokens.size());
  v.unk = optional_id(file, "tokenizer.ggml.unknown_token_id", tokens.size());
  v.add_bos = optional_bool(file, "tokenizer.ggml.add_bos_token", true);
  v.add_eos = optional_bool(file, "tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = optional_bool(file, "tokenizer.ggml.add_space_prefix", true);
  FingerprintBuilder fp;
  fp.add("distill-tokenizer/gguf-llama/v1").add(int64_t(tokens.size()));
  for (size_t id = 0; id < tokens.size(); id++) {
    char score[32];
    std::snprintf(score, sizeof score, "%a", double(v.scores[id]));  // exact, locale-free
    fp.add(tokens[id]).add(score).add(int64_t(v.types[id]));
  }
  fp.add(v.bos.value_or(-1)).add(v.eos.value_or(-1)).add(v.unk.value_or(-1))
      .add(int64_t(v.add_bos)).add(int64_t(v.add_eos)).add(int64_t(v.add_space_prefix));
  v.fingerprint = fp.hex();
  return make_gguf_spm_tokenizer(std::move(v));
}

}  // namespace

std::vector<std::string> gguf_pre_regexes(const std::string& pre) {
  const PreType& type = pre_type(pre);
  std::vector<std::string> all = type.regexes;
  if (!type.after_byte_level.empty()) {
    all.push_back(kGpt2Pattern);
    all.insert(all.end(), type.after_byte_level.begin(), type.after_byte_level.end());
  }
  return all;
}

std::unique_ptr<Tokenizer> gguf_tokenizer_from(const GgufFile& file) {
  const GgufValue* model_value = file.find("tokenizer.ggml.model");
  if (model_value == nullptr)
    throw Error("{}: no tokenizer.ggml.model: the file carries no vocabulary", file.path());
  const std::string model = model_value->as_string("tokenizer.ggml.model");
  const std::vector<std::string> tokens =
      file.get("tokenizer.ggml.tokens").as_strings("tokenizer.ggml.tokens");
  if (tokens.empty()) throw Error("{}: tokenizer.ggml.tokens is empty", file.path());
  if (tokens.size() > size_t(INT32_MAX))
    throw Error("{}: {} tokens is too many", file.path(), tokens.size());
  std::vector<VocabTokenType> types = token_types(file, tokens.size());
  try {
    if (model == "gpt2") return gpt2_tokenizer(file, tokens, types);
    if (model == "llama") return llama_tokenizer(file, tokens, std::move(types));
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(file.path(), 0) == 0) throw;
    throw Error("{}: {}", file.path(), what);
  }
  throw Error("{}: tokenizer.ggml.model \"{}\" is not supported (supported: gpt2, llama)",
              file.path(), model);
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  return gguf_tokenizer_from(GgufFile::open(path));
}

}  // namespace distill
