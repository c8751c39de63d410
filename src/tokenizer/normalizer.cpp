#include "tokenizer/normalizer.h"

#include <optional>
#include <vector>

#include "tokenizer/byte_level.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace distill {
namespace {

using namespace hf_json;

// Normalizers that add text (Replace, Prepend) could be chained to grow a text without bound.
constexpr size_t kMaxNormalizedBytes = size_t(1) << 30;

void check_size(const std::string& text) {
  if (text.size() > kMaxNormalizedBytes)
    throw Error("normalization made a text of more than {} bytes", kMaxNormalizedBytes);
}

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override {
    std::string out;
    if (unicode::normalize(text, form_, out)) text = std::move(out);
  }

 private:
  unicode::NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = unicode::to_lower(text); }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);  // HF leaves an empty string empty
    check_size(text);
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::string literal, std::optional<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    std::string out;
    size_t copied = 0;
    auto on_match = [&](size_t begin, size_t end) {
      out.append(text, copied, begin - copied);
      out += content_;
      copied = end;
      check_size(out);
    };
    if (regex_) {
      regex_->for_each_match(text, on_match);
    } else if (!literal_.empty()) {
      for (size_t at = text.find(literal_); at != std::string::npos;
           at = text.find(literal_, at + literal_.size()))
        on_match(at, at + literal_.size());
    }
    if (copied == 0 && out.empty()) return;  // nothing replaced
    out.append(text, copied, std::string::npos);
    text = std::move(out);
  }

 private:
  std::string literal_;
  std::optional<Regex> regex_;
  std::string content_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!unicode::is_whitespace(unicode::decode_utf8(text, next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) start--;
        size_t pos = start;
        if (!unicode::is_whitespace(unicode::decode_utf8(text, pos))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccents final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    if (unicode::is_ascii(text)) return;
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      char32_t c = unicode::decode_utf8(text, pos);
      if (!unicode::is_nonspacing_mark(c)) unicode::append_utf8(out, c);
    }
    text = std::move(out);
  }
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = byte_level::encode(text); }
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> normalizer_from_json(const json& j, const std::string& path) {
  const std::string type = type_of(j, path);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Prepend") return std::make_unique<Prepend>(string_field(j, "prepend", path));
  if (type == "Strip")
    return std::make_unique<Strip>(bool_or(j, "strip_left", path, true),
                                   bool_or(j, "strip_right", path, true));
  if (type == "Replace") {
    const std::string pattern_path = child(path, "pattern");
    const json& pattern = require_object(field(j, "pattern", path), pattern_path);
    std::string content = string_field(j, "content", path);
    if (pattern.contains("String"))
      return std::make_unique<Replace>(string_field(pattern, "String", pattern_path),
                                       std::nullopt, std::move(content));
    if (pattern.contains("Regex"))
      return std::make_unique<Replace>("", Regex(string_field(pattern, "Regex", pattern_path)),
                                       std::move(content));
    throw Error("{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", pattern_path);
  }
  if (type == "Sequence") {
    const std::string list_path = child(path, "normalizers");
    const json& list = require_array(field(j, "normalizers", path), list_path);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); i++)
      steps.push_back(normalizer_from_json(list[i], child(list_path, i)));
    return std::make_unique<Sequence>(std::move(steps));
  }
  throw Error(
      "{}: normalizer type \"{}\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, "
      "StripAccents, ByteLevel, Prepend, Strip, Replace, Sequence)",
      path, type);
}

}  // namespace distill
