#include "formats/gguf_export_vocab.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace distill {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// Pre-tokenizer regexes llama.cpp implements, by the tokenizer.ggml.pre name that selects them.
// (llama.cpp's converter identifies a tokenizer by hashing its output on a test text; we compare
// the Split regex of tokenizer.json instead, which is what decides the pre-tokenization.)
const std::vector<std::pair<std::string, std::string>>& known_pre_regexes() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"qwen2",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
      {"llama-bpe",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
  };
  return table;
}

size_t codepoints(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

json read_json_file(const std::string& path) {
  const std::string text = read_file_text(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for huge numbers
    throw Error("{}: not valid JSON: {}", path, e.what());
  }
}

// Whether some object within `j` (searched to a bounded depth: the file may be hostile) has
// "type" == `type`, or, for "Metaspace", is a Replace with "▁" as content.
bool json_mentions(const json& j, const std::string& type, int depth = 0) {
  if (depth > 16) return false;
  if (j.is_object()) {
    const auto t = j.find("type");
    if (t != j.end() && t->is_string()) {
      if (*t == type) return true;
      if (type == "Metaspace" && *t == "Replace" && j.contains("content") &&
          j["content"] == "\u2581")
        return true;
    }
    for (const auto& [k, v] : j.items())
      if (json_mentions(v, type, depth + 1)) return true;
  } else if (j.is_array()) {
    for (const json& v : j)
      if (json_mentions(v, type, depth + 1)) return true;
  }
  return false;
}

// A short description of a JSON value for messages (dump() recurses and could be huge).
std::string json_brief(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string())
    return "of type '" + j["type"].get<std::string>() + "'";
  return std::string("(") + j.type_name() + ")";
}

// "gpt-2" for a lone ByteLevel pre-tokenizer with its built-in regex; the table's name for a
// Split(regex) + ByteLevel(use_regex=false) sequence.
std::string detect_bpe_pre(const json& pre, const std::string& path) {
  auto is_byte_level = [](const json& p) { return p.is_object() && p.value("type", "") == "ByteLevel"; };
  if (is_byte_level(pre) && pre.value("use_regex", true)) return "gpt-2";
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    const json& seq = pre["pretokenizers"];
    if (seq.is_array() && seq.size() == 2 && seq[0].value("type", "") == "Split" &&
        is_byte_level(seq[1]) && !seq[1].value("use_regex", true) && seq[0].contains("pattern") &&
        seq[0]["pattern"].is_object() && seq[0]["pattern"].contains("Regex")) {
      const std::string regex = seq[0]["pattern"]["Regex"].get<std::string>();
      for (const auto& [name, known] : known_pre_regexes())
        if (regex == known) return name;
      throw Error("{}: the pre-tokenizer regex {} is not one llama.cpp implements under a known "
                  "name (supported: GPT-2's ByteLevel regex, qwen2, llama-bpe)", path,
                  json(regex).dump());
    }
  }
  throw Error("{}: pre_tokenizer {} is not supported for GGUF export (supported: ByteLevel, or "
              "Split(regex) + ByteLevel as in Qwen2 and Llama 3)", path, json_brief(pre));
}

// The content of a tokenizer_config.json token entry: "…" or {"content": "…"}.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

GgufVocab vocab_from_tokenizer_json_unchecked(const std::string& path) {
  const json j = read_json_file(path);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw Error("{}: not a tokenizer.json (no \"model\" object)", path);
  const json& model = j["model"];
  const std::string type = model.value("type", "");
  if (type != "BPE")
    throw Error("{}: tokenizer model type '{}' is not supported for GGUF export (supported: BPE)",
                path, type);
  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw Error("{}: model.vocab must be an object of token -> id", path);

  // id -> token text, from the vocabulary and the added tokens.
  std::map<int64_t, std::string> by_id;
  std::map<int64_t, int32_t> added_type;
  auto put = [&](const std::string& text, const json& id_json) {
    if (!id_json.is_number_integer())
      throw Error("{}: token '{}' has a non-integer id {}", path, text, json_brief(id_json));
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= (int64_t(1) << 24))
      throw Error("{}: token '{}' has id {}, outside [0, 2^24)", path, text, id);
    auto [it, inserted] = by_id.emplace(id, text);
    if (!inserted && it->second != text)
      throw Error("{}: id {} is both '{}' and '{}'", path, id, it->second, text);
  };
  for (const auto& [text, id] : model["vocab"].items()) put(text, id);
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& t : j["added_tokens"]) {
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string() || !t.contains("id"))
        throw Error("{}: malformed added_tokens entry {}", path, json_brief(t));
      const std::string text = t["content"].get<std::string>();
      put(text, t["id"]);
      added_type[t["id"].get<int64_t>()] =
          int32_t(t.value("special", false) ? GgufTokenType::Control : GgufTokenType::UserDefined);
    }
  }
  if (by_id.empty()) throw Error("{}: empty vocabulary", path);

  GgufVocab v;
  v.source = path;
  const int64_t n = by_id.rbegin()->first + 1;
  v.tokens.resize(size_t(n));
  v.types.assign(size_t(n), int32_t(GgufTokenType::Normal));
  for (int64_t id = 0; id < n; id++) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      v.tokens[id] = "[PAD" + std::to_string(id) + "]";
      v.types[id] = int32_t(GgufTokenType::Unused);
    } else {
      v.tokens[id] = it->second;
    }
  }
  for (const auto& [id, t] : added_type) v.types[id] = t;

  // Merges: "a b" strings (older files) or ["a", "b"] pairs (newer files).
  std::vector<std::string> merges;
  if (model.contains("merges") && model["merges"].is_array()) {
    merges.reserve(model["merges"].size());
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        throw Error("{}: malformed merge {}", path, json_brief(m));
      }
    }
  }

  const json pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();
  const json norm = j.contains("normalizer") ? j["normalizer"] : json();
  const bool byte_fallback = model.value("byte_fallback", false);
  if (json_mentions(pre, "ByteLevel")) {
    v.model = "gpt2";
    v.pre = detect_bpe_pre(pre, path);
    v.merges = std::move(merges);
  } else if (byte_fallback || json_mentions(norm, "Metaspace") || json_mentions(pre, "Metaspace")) {
    // SentencePiece-style: llama.cpp merges the adjacent pair whose concatenation has the highest
    // score, so a token's score is minus the rank of the first merge producing it.
    v.model = "llama";
    std::unordered_map<std::string, size_t> rank;
    for (size_t r = 0; r < merges.size(); r++) {
      const std::string& m = merges[r];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) throw Error("{}: merge '{}' has no space", path, m);
      rank.emplace(m.substr(0, sp) + m.substr(sp + 1), r);
    }
    v.scores.assign(size_t(n), 0.0f);
    for (int64_t id = 0; id < n; id++) {
      const std::string& t = v.tokens[id];
      auto it = rank.find(t);
      const bool is_byte = t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>';
      if (it != rank.end()) v.scores[id] = -float(it->second);
      else if (!is_byte && v.types[id] == int32_t(GgufTokenType::Normal) && codepoints(t) > 1)
        v.scores[id] = -1e9f;  // several characters, but no merge produces it: merge it last
      if (is_byte && v.types[id] == int32_t(GgufTokenType::Normal))
        v.types[id] = int32_t(GgufTokenType::Byte);
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto it = model["vocab"].find(model["unk_token"].get<std::string>());
      if (it != model["vocab"].end() && it->is_number_integer()) {
        v.unk = it->get<int>();
        v.types[v.unk] = int32_t(GgufTokenType::Unknown);
      }
    }
    // HF prepends "▁" unless told otherwise (Metaspace prepend_scheme "never").
    bool prefix = true;
    if (pre.is_object() && pre.value("type", "") == "Metaspace" &&
        (pre.value("prepend_scheme", "always") == "never" || !pre.value("add_prefix_space", true)))
      prefix = false;
    v.add_space_prefix = prefix;
  } else {
    throw Error("{}: neither byte-level BPE nor SentencePiece-style BPE (no ByteLevel "
                "pre-tokenizer, no byte_fallback/Metaspace): not supported for GGUF export", path);
  }

  // Special ids and add_bos/add_eos: tokenizer_config.json beside the file, else the
  // post-processor template.
  auto id_of = [&](const std::string& text) -> int {
    for (const auto& [id, t] : by_id)
      if (t == text) return int(id);
    return -1;
  };
  const fs::path cfg_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    const json cfg = read_json_file(cfg_path.string());
    if (auto t = config_token(cfg, "bos_token")) v.bos = id_of(*t);
    if (auto t = config_token(cfg, "eos_token")) v.eos = id_of(*t);
    if (auto t = config_token(cfg, "pad_token")) v.pad = id_of(*t);
    if (v.unk < 0)
      if (auto t = config_token(cfg, "unk_token")) v.unk = id_of(*t);
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
      v.add_bos = cfg["add_bos_token"].get<bool>();
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
      v.add_eos = cfg["add_eos_token"].get<bool>();
  }
  if (!v.add_bos && j.contains("post_processor") && j["post_processor"].is_object() &&
      j["post_processor"].value("type", "") == "TemplateProcessing") {
    const json& single = j["post_processor"]["single"];
    v.add_bos = single.is_array() && !single.empty() && single[0].contains("SpecialToken");
  }
  if (!v.add_bos) v.add_bos = false;
  return v;
}

// Values of an unexpected JSON type (e.g. "type": 5) make nlohmann::json throw; they are errors
// in the file like any other.
GgufVocab vocab_from_tokenizer_json(const std::string& path) {
  try {
    return vocab_from_tokenizer_json_unchecked(path);
  } catch (const json::exception& e) {
    throw Error("{}: unexpected tokenizer.json structure: {}", path, e.what());
  }
}

// ---- SentencePiece .model (protobuf) ----

// A minimal protobuf wire-format reader: just what ModelProto needs, bounds-checked.
class ProtoReader {
 public:
  ProtoReader(const std::string& path, const uint8_t* p, size_t n)
      : path_(path), p_(p), end_(p + n) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) fail("truncated varint");
      const uint8_t b = *p_++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }
  // (field number, wire type)
  std::pair<uint32_t, uint32_t> tag() {
    const uint64_t t = varint();
    return {uint32_t(t >> 3), uint32_t(t & 7)};
  }
  ProtoReader sub() {
    const uint64_t n = varint();
    if (n > uint64_t(end_ - p_)) fail("length-delimited field runs past the end");
    ProtoReader r(path_, p_, size_t(n));
    p_ += n;
    return r;
  }
  std::string bytes() {
    ProtoReader r = sub();
    return std::string(reinterpret_cast<const char*>(r.p_), size_t(r.end_ - r.p_));
  }
  float fixed32_float() {
    if (end_ - p_ < 4) fail("truncated fixed32");
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); return;
      case 1: advance(8); return;
      case 2: sub(); return;
      case 5: advance(4); return;
      default: fail(fmt::format("unsupported wire type {}", wire));
    }
  }

 private:
  void advance(size_t n) {
    if (size_t(end_ - p_) < n) fail("truncated field");
    p_ += n;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw Error("{}: not a valid SentencePiece model: {}", path_, why);
  }
  const std::string& path_;
  const uint8_t* p_;
  const uint8_t* end_;
};

GgufVocab vocab_from_spm_model(const std::string& path) {
  const std::string data = read_file_text(path);
  ProtoReader top(path, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  GgufVocab v;
  v.source = path;
  v.model = "llama";
  int model_type = 1;  // UNIGRAM is the proto default
  int unk = 0, bos = 1, eos = 2, pad = -1;
  std::string norm_name;
  bool add_dummy_prefix = true, remove_extra_ws = true;
  while (!top.done()) {
    const auto [field, wire] = top.tag();
    if (field == 1 && wire == 2) {  // SentencePiece { piece = 1; score = 2; type = 3; }
      ProtoReader p = top.sub();
      std::string piece;
      float score = 0.0f;
      int32_t type = int32_t(GgufTokenType::Normal);
      while (!p.done()) {
        const auto [f, w] = p.tag();
        if (f == 1 && w == 2) piece = p.bytes();
        else if (f == 2 && w == 5) score = p.fixed32_float();
        else if (f == 3 && w == 0) type = int32_t(p.varint());
        else p.skip(w);
      }
      if (type < 1 || type > 6)
        throw Error("{}: piece '{}' has unknown type {}", path, piece, type);
      v.tokens.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      ProtoReader t = top.sub();
      while (!t.done()) {
        const auto [f, w] = t.tag();
        if (w != 0) {
          t.skip(w);
          continue;
        }
        const int32_t value = int32_t(t.varint());
        if (f == 3) model_type = value;
        else if (f == 40) unk = value;
        else if (f == 41) bos = value;
        else if (f == 42) eos = value;
        else if (f == 43) pad = value;
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      ProtoReader nspec = top.sub();
      while (!nspec.done()) {
        const auto [f, w] = nspec.tag();
        if (f == 1 && w == 2) norm_name = nspec.bytes();
        else if (f == 3 && w == 0) add_dummy_prefix = nspec.varint() != 0;
        else if (f == 4 && w == 0) remove_extra_ws = nspec.varint() != 0;
        else nspec.skip(w);
      }
    } else {
      top.skip(wire);
    }
  }
  if (v.tokens.empty()) throw Error("{}: SentencePiece model has no pieces", path);
  if (model_type != 2)
    throw Error("{}: SentencePiece model type {} is not supported for GGUF export: llama.cpp's "
                "'llama' vocabulary reproduces BPE models (type 2) only", path,
                model_type == 1 ? "UNIGRAM" : std::to_string(model_type));
  if (!norm_name.empty() && norm_name != "identity")
    throw Error("{}: SentencePiece normalization '{}' is not supported for GGUF export (llama.cpp "
                "applies none; supported: identity)", path, norm_name);
  const int n = int(v.tokens.size());
  auto in_range = [&](int id) { return id >= 0 && id < n ? id : -1; };
  v.unk = in_range(unk);
  v.bos = in_range(bos);
  v.eos = in_range(eos);
  v.pad = in_range(pad);
  v.add_space_prefix = add_dummy_prefix;
  v.remove_extra_whitespaces = remove_extra_ws;
  v.add_bos = true;  // SentencePiece's llama convention; tokenizer_config.json may say otherwise
  const fs::path cfg_path = fs::path(path).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    const json cfg = read_json_file(cfg_path.string());
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
      v.add_bos = cfg["add_bos_token"].get<bool>();
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
      v.add_eos = cfg["add_eos_token"].get<bool>();
  }
  return v;
}

}  // namespace

std::string gpt2_byte_to_unicode(uint8_t byte) {
  auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  if (printable(byte)) return utf8_encode(byte);
  int n = 0;
  for (int b = 0; b < byte; b++)
    if (!printable(b)) n++;
  return utf8_encode(256 + uint32_t(n));
}

GgufVocab gguf_vocab_bytes() {
  GgufVocab v;
  v.source = "bytes";
  v.model = "gpt2";
  v.pre = "gpt-2";
  for (int b = 0; b < 256; b++) {
    v.tokens.push_back(gpt2_byte_to_unicode(uint8_t(b)));
    v.types.push_back(int32_t(GgufTokenType::Normal));
  }
  v.add_bos = false;
  v.add_eos = false;
  return v;
}

GgufVocab gguf_vocab_from_file(const std::string& path) {
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "tokenizer.json"))
      return vocab_from_tokenizer_json((fs::path(path) / "tokenizer.json").string());
    if (fs::exists(fs::path(path) / "tokenizer.model"))
      return vocab_from_spm_model((fs::path(path) / "tokenizer.model").string());
    throw Error("{}: directory has no tokenizer.json or tokenizer.model", path);
  }
  if (!fs::exists(path)) throw Error("{}: tokenizer file not found", path);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".json") return vocab_from_tokenizer_json(path);
  if (ext == ".model") return vocab_from_spm_model(path);
  throw Error("{}: expected a tokenizer.json or a SentencePiece .model file", path);
}

void gguf_vocab_pad(GgufVocab& vocab, int n) {
  const int have = int(vocab.tokens.size());
  if (have > n)
    throw Error("tokenizer {} has {} tokens but the model's vocabulary is only {}: they do not "
                "belong together", vocab.source, have, n);
  for (int id = have; id < n; id++) {
    vocab.tokens.push_back("[PAD" + std::to_string(id) + "]");
    vocab.types.push_back(int32_t(GgufTokenType::Unused));
    if (!vocab.scores.empty()) vocab.scores.push_back(-1e9f);
  }
}

void gguf_vocab_write(GgufWriter& w, const GgufVocab& v) {
  w.set("tokenizer.ggml.model", GgufValue::of_string(v.model));
  if (!v.pre.empty()) w.set("tokenizer.ggml.pre", GgufValue::of_string(v.pre));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings(v.tokens));
  if (!v.scores.empty()) w.set("tokenizer.ggml.scores", GgufValue::of_f32s(v.scores));
  w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(v.types));
  if (v.model == "gpt2") w.set("tokenizer.ggml.merges", GgufValue::of_strings(v.merges));
  auto id = [&](const char* key, int value) {
    if (value >= 0) w.set(key, GgufValue::of_u32(uint32_t(value)));
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  auto flag = [&](const char* key, const std::optional<bool>& value) {
    if (value) w.set(key, GgufValue::of_bool(*value));
  };
  flag("tokenizer.ggml.add_bos_token", v.add_bos);
  flag("tokenizer.ggml.add_eos_token", v.add_eos);
  flag("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  flag("tokenizer.ggml.remove_extra_whitespaces", v.remove_extra_whitespaces);
}

}  // namespace distill
