#include "tokenizer/decoder.h"

#include <optional>

#include "tokenizer/byte_level.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace distill {
namespace {

using namespace hf_json;

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    // A token whose characters are all byte characters stands for those bytes; any other
    // (an added token such as "<|endoftext|>" written in plain text) stands for itself.
    std::string text;
    for (const std::string& token : tokens) {
      if (auto bytes = byte_level::decode(token)) text += *bytes;
      else text += token;
    }
    tokens.assign(1, std::move(text));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  // strip_first: the replacement characters of the first token are dropped rather than turned
  // into spaces (HF's rule when the pre-tokenizer prepends one).
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); i++) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (!replacement_.empty() && t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && strip_first_)) out += ' ';
          pos += replacement_.size();
        } else {
          out += t[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// "<0xXX>" tokens become the byte they name; runs of them are joined so that multi-byte
// characters come out whole.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    bool in_bytes = false;
    for (std::string& t : tokens) {
      int b = byte_of(t);
      if (b >= 0) {
        bytes.push_back(char(b));
        in_bytes = true;
        continue;
      }
      if (in_bytes) out.push_back(std::move(bytes));
      bytes.clear();
      in_bytes = false;
      out.push_back(std::move(t));
    }
    if (in_bytes) out.push_back(std::move(bytes));
    tokens = std::move(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string text;
    for (const std::string& t : tokens) text += t;
    tokens.assign(1, std::move(text));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (content_.empty()) return;
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      for (size_t k = 0; k < start_ && t.compare(begin, content_.size(), content_) == 0 &&
                         begin + content_.size() <= end;
           k++)
        begin += content_.size();
      for (size_t k = 0; k < stop_ && end >= begin + content_.size() &&
                         t.compare(end - content_.size(), content_.size(), content_) == 0;
           k++)
        end -= content_.size();
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string literal, std::optional<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::string out;
      size_t copied = 0;
      auto on_match = [&](size_t begin, size_t end) {
        out.append(t, copied, begin - copied);
        out += content_;
        copied = end;
      };
      if (regex_) {
        if (unicode::find_invalid_utf8(t) == std::string::npos) regex_->for_each_match(t, on_match);
      } else if (!literal_.empty()) {
        for (size_t at = t.find(literal_); at != std::string::npos;
             at = t.find(literal_, at + literal_.size()))
          on_match(at, at + literal_.size());
      }
      out.append(t, copied, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::optional<Regex> regex_;
  std::string content_;
};

// The suffix that ends a word ("</w>") becomes a space, except after the last token.
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); i++) {
      std::string& t = tokens[i];
      const std::string replacement = i + 1 == tokens.size() ? "" : " ";
      for (size_t at = t.find(suffix_); !suffix_.empty() && at != std::string::npos;
           at = t.find(suffix_, at + replacement.size()))
        t.replace(at, suffix_.size(), replacement);
    }
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }

std::unique_ptr<Decoder> decoder_from_json(const json& j, const std::string& path) {
  const std::string type = type_of(j, path);
  if (type == "ByteLevel") return make_byte_level_decoder();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    bool strip_first = true;
    if (const json* s = optional_field(j, "prepend_scheme"))
      strip_first = !(s->is_string() && s->get<std::string>() == "never");
    else
      strip_first = bool_or(j, "add_prefix_space", path, true);
    return std::make_unique<MetaspaceDecoder>(string_or(j, "replacement", path, "\u2581"),
                                              strip_first);
  }
  if (type == "Strip") {
    int64_t start = int_or(j, "start", path, 0), stop = int_or(j, "stop", path, 0);
    if (start < 0 || stop < 0) throw Error("{}: start and stop must not be negative", path);
    return std::make_unique<StripDecoder>(string_field(j, "content", path), size_t(start),
                                          size_t(stop));
  }
  if (type == "Replace") {
    const std::string pattern_path = child(path, "pattern");
    const json& pattern = require_object(field(j, "pattern", path), pattern_path);
    std::string content = string_field(j, "content", path);
    if (pattern.contains("String"))
      return std::make_unique<ReplaceDecoder>(string_field(pattern, "String", pattern_path),
                                              std::nullopt, std::move(content));
    if (pattern.contains("Regex"))
      return std::make_unique<ReplaceDecoder>(
          "", Regex(string_field(pattern, "Regex", pattern_path)), std::move(content));
    throw Error("{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", pattern_path);
  }
  if (type == "BPEDecoder")
    return std::make_unique<BpeSuffixDecoder>(string_or(j, "suffix", path, "</w>"));
  if (type == "Sequence") {
    const std::string list_path = child(path, "decoders");
    const json& list = require_array(field(j, "decoders", path), list_path);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); i++)
      steps.push_back(decoder_from_json(list[i], child(list_path, i)));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  throw Error(
      "{}: decoder type \"{}\" is not supported (supported: ByteLevel, ByteFallback, Fuse, "
      "Metaspace, Strip, Replace, BPEDecoder, Sequence)",
      path, type);
}

}  // namespace distill
