#include "formats/gguf_import_vocab.h"

#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace distill {

namespace {

using ojson = nlohmann::ordered_json;

// Split regexes of the pre-tokenizers llama.cpp names (see gguf_export_vocab.cpp).
const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string dump(const ojson& j, const std::string& what) {
  try {
    return j.dump(2) + "\n";
  } catch (const ojson::type_error& e) {
    throw Error("{}: cannot write JSON (a token is not valid UTF-8?): {}", what, e.what());
  }
}

// ---- protobuf wire format, just what a SentencePiece ModelProto needs ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
void put_tag(std::string& out, uint32_t field, uint32_t wire) { put_varint(out, field << 3 | wire); }
void put_int(std::string& out, uint32_t field, int64_t v) {  // int32/bool: negative = 10 bytes
  put_tag(out, field, 0);
  put_varint(out, uint64_t(v));
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}
void put_float(std::string& out, uint32_t field, float f) {
  put_tag(out, field, 5);
  char b[4];
  std::memcpy(b, &f, 4);
  out.append(b, 4);
}

std::string spm_model_proto(const GgufVocab& v, const std::string& where) {
  const int n = int(v.tokens.size());
  int unk = v.unk;
  for (int id = 0; unk < 0 && id < n; id++)
    if (v.types[id] == int32_t(GgufTokenType::Unknown)) unk = id;
  if (unk < 0)
    throw Error("{}: the SentencePiece vocabulary has no unknown token, which tokenizer.model "
                "needs", where);
  std::string proto;
  bool byte_fallback = false;
  std::set<std::string> seen;
  for (int id = 0; id < n; id++) {
    if (v.tokens[id].empty() || !seen.insert(v.tokens[id]).second)
      throw Error("{}: token {} is empty or a duplicate ('{}'): not a SentencePiece vocabulary",
                  where, id, v.tokens[id]);
    int32_t type = v.types[id];
    if (type < 1 || type > 6) type = 1;
    if (id == unk) type = int32_t(GgufTokenType::Unknown);
    byte_fallback |= type == int32_t(GgufTokenType::Byte);
    std::string piece;
    put_bytes(piece, 1, v.tokens[id]);
    put_float(piece, 2, v.scores.empty() ? 0.0f : v.scores[id]);
    if (type != 1) put_int(piece, 3, type);
    put_bytes(proto, 1, piece);
  }
  auto text = [&](int id) { return id >= 0 && id < n ? v.tokens[id] : std::string(); };
  std::string trainer;
  put_int(trainer, 3, 2);  // model_type BPE
  put_int(trainer, 4, n);  // vocab_size
  put_int(trainer, 35, byte_fallback);
  put_int(trainer, 40, unk);
  put_int(trainer, 41, v.bos >= 0 && v.bos < n ? v.bos : -1);
  put_int(trainer, 42, v.eos >= 0 && v.eos < n ? v.eos : -1);
  put_int(trainer, 43, v.pad >= 0 && v.pad < n ? v.pad : -1);
  put_bytes(trainer, 45, text(unk));
  if (!text(v.bos).empty()) put_bytes(trainer, 46, text(v.bos));
  if (!text(v.eos).empty()) put_bytes(trainer, 47, text(v.eos));
  if (!text(v.pad).empty()) put_bytes(trainer, 48, text(v.pad));
  put_bytes(proto, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, "identity");
  put_int(normalizer, 3, v.add_space_prefix.value_or(true));
  put_int(normalizer, 4, v.remove_extra_whitespaces.value_or(false));
  put_int(normalizer, 5, 1);  // escape_whitespaces: ' ' <-> '▁'
  put_bytes(proto, 3, normalizer);
  return proto;
}

ojson hf_tokenizer_json(const GgufVocab& v, const std::string& where) {
  ojson pre;
  if (v.pre == "gpt-2") {
    pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
           {"use_regex", true}};
  } else if (v.pre == "qwen2" || v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3") {
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Split"},
              {"pattern", {{"Regex", v.pre == "qwen2" ? kQwen2Regex : kLlama3Regex}}},
              {"behavior", "Isolated"},
              {"invert", false}},
             {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
              {"use_regex", false}}}}};
  } else {
    throw Error("{}: pre-tokenizer '{}' has no tokenizer.json equivalent here (supported: gpt-2, "
                "qwen2, llama-bpe)", where, v.pre.empty() ? "(none)" : v.pre);
  }
  const int n = int(v.tokens.size());
  ojson added = ojson::array();
  ojson vocab = ojson::object();
  for (int id = 0; id < n; id++) {
    if (vocab.contains(v.tokens[id]))
      throw Error("{}: token '{}' appears twice (ids {} and {})", where, v.tokens[id],
                  vocab[v.tokens[id]].get<int>(), id);
    vocab[v.tokens[id]] = id;
    const int32_t type = v.types[id];
    if (type == int32_t(GgufTokenType::Control) || type == int32_t(GgufTokenType::UserDefined))
      added.push_back({{"id", id}, {"content", v.tokens[id]}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false},
                       {"normalized", type == int32_t(GgufTokenType::UserDefined)},
                       {"special", type == int32_t(GgufTokenType::Control)}});
  }
  ojson post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                {"use_regex", true}};
  if (v.add_bos.value_or(false) && v.bos >= 0 && v.bos < n) {
    post = {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", v.tokens[v.bos]}, {"type_id", 0}}}},
                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", {{{"SpecialToken", {{"id", v.tokens[v.bos]}, {"type_id", 0}}}},
                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                      {{"SpecialToken", {{"id", v.tokens[v.bos]}, {"type_id", 1}}}},
                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens",
             {{v.tokens[v.bos], {{"id", v.tokens[v.bos]}, {"ids", {v.bos}}, {"tokens", {v.tokens[v.bos]}}}}}}};
  }
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre;
  j["post_processor"] = post;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3"},
                {"vocab", vocab},
                {"merges", v.merges}};
  return j;
}

}  // namespace

GgufVocab gguf_vocab_read(const GgufFile& f) {
  GgufVocab v;
  v.source = f.path();
  v.model = f.get("tokenizer.ggml.model").as_string("tokenizer.ggml.model");
  if (const GgufValue* p = f.find("tokenizer.ggml.pre")) v.pre = p->as_string("tokenizer.ggml.pre");
  v.tokens = f.get("tokenizer.ggml.tokens").as_strings("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  if (n == 0) throw Error("{}: tokenizer.ggml.tokens is empty", f.path());
  if (const GgufValue* s = f.find("tokenizer.ggml.scores")) {
    v.scores = s->as_floats("tokenizer.ggml.scores");
    if (v.scores.size() != n)
      throw Error("{}: tokenizer.ggml.scores has {} values for {} tokens", f.path(), v.scores.size(), n);
  }
  v.types.assign(n, int32_t(GgufTokenType::Normal));
  if (const GgufValue* t = f.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = t->as_ints("tokenizer.ggml.token_type");
    if (types.size() != n)
      throw Error("{}: tokenizer.ggml.token_type has {} values for {} tokens", f.path(), types.size(), n);
    for (size_t i = 0; i < n; i++) v.types[i] = int32_t(types[i]);
  }
  if (const GgufValue* m = f.find("tokenizer.ggml.merges"))
    v.merges = m->as_strings("tokenizer.ggml.merges");
  auto id = [&](const char* key, int& out) {
    if (const GgufValue* x = f.find(key)) {
      const int64_t i = x->as_int(key);
      if (i >= 0 && i < int64_t(n)) out = int(i);  // llama.cpp ignores out-of-range ids too
    }
  };
  id("tokenizer.ggml.bos_token_id", v.bos);
  id("tokenizer.ggml.eos_token_id", v.eos);
  id("tokenizer.ggml.unknown_token_id", v.unk);
  id("tokenizer.ggml.padding_token_id", v.pad);
  auto flag = [&](const char* key, std::optional<bool>& out) {
    if (const GgufValue* x = f.find(key)) out = x->as_bool(key);
  };
  flag("tokenizer.ggml.add_bos_token", v.add_bos);
  flag("tokenizer.ggml.add_eos_token", v.add_eos);
  flag("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  flag("tokenizer.ggml.remove_extra_whitespaces", v.remove_extra_whitespaces);
  return v;
}

std::string write_tokenizer_files(const GgufVocab& v, const std::string& dir,
                                  int model_max_length) {
  const std::string where = v.source + " vocabulary";
  std::string name, bytes;
  if (v.model == "gpt2") {
    name = "tokenizer.json";
    bytes = dump(hf_tokenizer_json(v, where), where);
  } else if (v.model == "llama") {
    name = "tokenizer.model";
    bytes = spm_model_proto(v, where);
  } else {
    throw Error("{}: tokenizer.ggml.model '{}' has no tokenizer file here (supported: gpt2, llama)",
                where, v.model);
  }
  const int n = int(v.tokens.size());
  auto token = [&](int id) { return id >= 0 && id < n ? ojson(v.tokens[id]) : ojson(nullptr); };
  ojson cfg;
  cfg["add_bos_token"] = v.add_bos.value_or(v.model == "llama");
  cfg["add_eos_token"] = v.add_eos.value_or(false);
  cfg["bos_token"] = token(v.bos);
  cfg["eos_token"] = token(v.eos);
  cfg["unk_token"] = token(v.unk);
  cfg["pad_token"] = token(v.pad);
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["model_max_length"] = model_max_length;
  cfg["tokenizer_class"] = v.model == "llama" ? "LlamaTokenizer" : "PreTrainedTokenizerFast";
  if (v.model == "llama") cfg["legacy"] = true;
  const std::string cfg_text = dump(cfg, where);
  write_file_atomic(dir + "/" + name, bytes.data(), bytes.size());
  write_file_atomic(dir + "/tokenizer_config.json", cfg_text.data(), cfg_text.size());
  return name;
}

}  // namespace distill
