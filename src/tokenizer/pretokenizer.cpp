#include "tokenizer/pretokenizer.h"

#include <optional>

#include "tokenizer/byte_level.h"
#include "tokenizer/hf_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace distill {

const char* const kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

using namespace hf_json;

struct Segment {
  uint32_t begin, end;
  bool match;
};

// Re-cuts every word of `words` at the matches that find(word, emit) reports through
// emit(begin, end) (offsets within the word), keeping, dropping or merging the matched pieces
// as HF's SplitDelimiterBehavior says. Empty pieces are dropped, as HF does.
template <class Find>
void split_words(PreTokenized& words, SplitBehavior behavior, bool invert, Find&& find) {
  thread_local std::vector<Span> out;
  thread_local std::vector<Segment> segments;
  out.clear();
  for (const Span word : words.spans) {
    std::string_view text(words.text.data() + word.begin, word.end - word.begin);
    const uint32_t base = word.begin;
    if (behavior == SplitBehavior::Isolated && !invert) {
      // The hot path (GPT-2 style regexes): every match and every gap is a word.
      uint32_t previous = 0;
      find(text, [&](size_t begin, size_t end) {
        if (begin > previous) out.push_back({base + previous, base + uint32_t(begin)});
        out.push_back({base + uint32_t(begin), base + uint32_t(end)});
        previous = uint32_t(end);
      });
      if (previous < text.size()) out.push_back({base + previous, word.end});
      continue;
    }
    segments.clear();
    uint32_t previous = 0;
    find(text, [&](size_t begin, size_t end) {
      if (begin > previous) segments.push_back({previous, uint32_t(begin), false});
      segments.push_back({uint32_t(begin), uint32_t(end), true});
      previous = uint32_t(end);
    });
    if (previous < text.size() || segments.empty())
      segments.push_back({previous, uint32_t(text.size()), false});
    if (invert)
      for (Segment& s : segments) s.match = !s.match;

    const size_t first_out = out.size();
    auto emit = [&](uint32_t begin, uint32_t end) { out.push_back({base + begin, base + end}); };
    switch (behavior) {
      case SplitBehavior::Removed:
        for (const Segment& s : segments)
          if (!s.match) emit(s.begin, s.end);
        break;
      case SplitBehavior::Isolated:
        for (const Segment& s : segments) emit(s.begin, s.end);
        break;
      case SplitBehavior::MergedWithPrevious: {
        // A match joins the piece before it, unless that piece was itself a match.
        bool previous_match = false;
        for (const Segment& s : segments) {
          if (s.match && !previous_match && out.size() > first_out)
            out.back().end = base + s.end;
          else
            emit(s.begin, s.end);
          previous_match = s.match;
        }
        break;
      }
      case SplitBehavior::MergedWithNext: {
        // A match joins the piece after it, unless that piece is itself a match.
        bool pending = false;  // the last emitted piece is a match waiting for its successor
        for (const Segment& s : segments) {
          if (pending && !s.match) {
            out.back().end = base + s.end;
            pending = false;
          } else {
            emit(s.begin, s.end);
            pending = s.match;
          }
        }
        break;
      }
      case SplitBehavior::Contiguous: {
        // Runs of adjacent matches (or of adjacent non-matches) become one piece.
        bool previous_match = false;
        bool any = false;
        for (const Segment& s : segments) {
          if (any && s.match == previous_match)
            out.back().end = base + s.end;
          else
            emit(s.begin, s.end);
          previous_match = s.match;
          any = true;
        }
        break;
      }
    }
    // Drop empty pieces.
    size_t kept = first_out;
    for (size_t i = first_out; i < out.size(); i++)
      if (out[i].end > out[i].begin) out[kept++] = out[i];
    out.resize(kept);
  }
  words.spans.swap(out);
}

// Each character for which `predicate` holds is its own match (HF's Pattern for Fn(char)).
template <class Predicate>
auto char_matches(Predicate predicate) {
  return [predicate](std::string_view text, auto&& emit) {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t start = pos;
      char32_t c = unicode::decode_utf8(text, pos);
      if (predicate(c)) emit(start, pos);
    }
  };
}

auto regex_matches(const Regex& regex) {
  return [&regex](std::string_view text, auto&& emit) { regex.for_each_match(text, emit); };
}

auto literal_matches(const std::string& literal) {
  return [&literal](std::string_view text, auto&& emit) {
    if (literal.empty()) return;
    for (size_t at = text.find(literal); at != std::string_view::npos;
         at = text.find(literal, at + literal.size()))
      emit(at, at + literal.size());
  };
}

class RegexSplit final : public PreTokenizer {
 public:
  RegexSplit(const std::string& pattern, SplitBehavior behavior, bool invert)
      : regex_(pattern), behavior_(behavior), invert_(invert) {}
  void apply(PreTokenized& words, bool) const override {
    split_words(words, behavior_, invert_, regex_matches(regex_));
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class LiteralSplit final : public PreTokenizer {
 public:
  LiteralSplit(std::string literal, SplitBehavior behavior, bool invert)
      : literal_(std::move(literal)), behavior_(behavior), invert_(invert) {}
  void apply(PreTokenized& words, bool) const override {
    split_words(words, behavior_, invert_, literal_matches(literal_));
  }

 private:
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class CharClass { Whitespace, Punctuation, Digit, Delimiter };

class CharSplit final : public PreTokenizer {
 public:
  CharSplit(CharClass cls, SplitBehavior behavior, char32_t delimiter = 0)
      : cls_(cls), behavior_(behavior), delimiter_(delimiter) {}
  void apply(PreTokenized& words, bool) const override {
    switch (cls_) {
      case CharClass::Whitespace:
        split_words(words, behavior_, false, char_matches(unicode::is_whitespace));
        break;
      case CharClass::Punctuation:
        split_words(words, behavior_, false, char_matches(unicode::is_punctuation));
        break;
      case CharClass::Digit:
        split_words(words, behavior_, false, char_matches(unicode::is_numeric));
        break;
      case CharClass::Delimiter: {
        char32_t d = delimiter_;
        split_words(words, behavior_, false, char_matches([d](char32_t c) { return c == d; }));
        break;
      }
    }
  }

 private:
  CharClass cls_;
  SplitBehavior behavior_;
  char32_t delimiter_;
};

// Rebuilds words.text from each word through rewrite(index, word, out), which appends the new
// text of the word to `out`.
template <class Rewrite>
void rewrite_words(PreTokenized& words, Rewrite&& rewrite) {
  thread_local std::string text;
  text.clear();
  text.reserve(words.text.size() + words.text.size() / 2 + 8);
  for (size_t i = 0; i < words.spans.size(); i++) {
    Span& word = words.spans[i];
    std::string_view old(words.text.data() + word.begin, word.end - word.begin);
    uint32_t begin = uint32_t(text.size());
    rewrite(i, word, old, text);
    word = {begin, uint32_t(text.size())};
  }
  words.text.swap(text);
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, bool map_bytes)
      : add_prefix_space_(add_prefix_space), map_bytes_(map_bytes) {
    if (use_regex) regex_.emplace(kGpt2Pattern);
  }
  void apply(PreTokenized& words, bool) const override {
    if (add_prefix_space_) {
      rewrite_words(words, [](size_t, Span, std::string_view old, std::string& out) {
        if (old.empty() || old[0] != ' ') out += ' ';
        out += old;
      });
    }
    if (regex_) split_words(words, SplitBehavior::Isolated, false, regex_matches(*regex_));
    if (map_bytes_) {
      rewrite_words(words, [](size_t, Span, std::string_view old, std::string& out) {
        for (unsigned char b : old) out += byte_level::char_of_byte(b);
      });
    }
  }

 private:
  bool add_prefix_space_;
  bool map_bytes_;
  std::optional<Regex> regex_;
};

enum class PrependScheme { Always, First, Never };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {
    size_t pos = 0;
    replacement_char_ = replacement_.empty() ? 0 : unicode::decode_utf8(replacement_, pos);
  }
  void apply(PreTokenized& words, bool at_text_start) const override {
    rewrite_words(words, [&](size_t i, Span word, std::string_view old, std::string& out) {
      bool prepend = scheme_ == PrependScheme::Always ||
                     (scheme_ == PrependScheme::First && i == 0 && word.begin == 0 &&
                      at_text_start);
      if (prepend && old.substr(0, replacement_.size()) != replacement_ &&
          !(old.size() > 0 && old[0] == ' '))
        out += replacement_;
      for (char c : old) {
        if (c == ' ') out += replacement_;
        else out += c;
      }
    });
    if (split_) {
      char32_t r = replacement_char_;
      split_words(words, SplitBehavior::MergedWithNext, false,
                  char_matches([r](char32_t c) { return c == r; }));
    }
  }

 private:
  std::string replacement_;
  char32_t replacement_char_ = 0;
  PrependScheme scheme_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void apply(PreTokenized& words, bool at_text_start) const override {
    for (const auto& step : steps_) step->apply(words, at_text_start);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

SplitBehavior behavior_from_json(const json& j, const std::string& path,
                                 SplitBehavior fallback) {
  const json* v = optional_field(j, "behavior");
  if (v == nullptr) return fallback;
  std::string name = v->is_string() ? v->get<std::string>() : "";
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(
      "{}: expected one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous, "
      "found {}",
      child(path, "behavior"), v->dump());
}

std::unique_ptr<PreTokenizer> from_json(const json& j, const std::string& path,
                                        bool defer_byte_mapping, bool* deferred) {
  const std::string type = type_of(j, path);
  if (type == "ByteLevel") {
    bool add_prefix_space = bool_or(j, "add_prefix_space", path, true);
    bool use_regex = bool_or(j, "use_regex", path, true);
    if (defer_byte_mapping && deferred != nullptr) *deferred = true;
    return make_byte_level(add_prefix_space, use_regex, !defer_byte_mapping);
  }
  if (type == "Split") {
    const std::string pattern_path = child(path, "pattern");
    const json& pattern = require_object(field(j, "pattern", path), pattern_path);
    SplitBehavior behavior = behavior_from_json(j, path, SplitBehavior::Isolated);
    bool invert = bool_or(j, "invert", path, false);
    if (pattern.contains("Regex"))
      return make_regex_split(string_field(pattern, "Regex", pattern_path), behavior, invert);
    if (pattern.contains("String"))
      return std::make_unique<LiteralSplit>(string_field(pattern, "String", pattern_path),
                                            behavior, invert);
    throw Error("{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", pattern_path);
  }
  if (type == "Metaspace") {
    std::string replacement = string_or(j, "replacement", path, "\u2581");
    if (replacement.empty() ||
        size_t(unicode::utf8_length(static_cast<unsigned char>(replacement[0]))) !=
            replacement.size())
      throw Error("{}: expected a single character, found \"{}\"", child(path, "replacement"),
                  replacement);
    PrependScheme scheme = PrependScheme::Always;
    if (const json* s = optional_field(j, "prepend_scheme")) {
      std::string name = s->is_string() ? s->get<std::string>() : "";
      if (name == "always") scheme = PrependScheme::Always;
      else if (name == "first") scheme = PrependScheme::First;
      else if (name == "never") scheme = PrependScheme::Never;
      else
        throw Error("{}: expected \"always\", \"first\" or \"never\", found {}",
                    child(path, "prepend_scheme"), s->dump());
    } else if (!bool_or(j, "add_prefix_space", path, true)) {
      scheme = PrependScheme::Never;  // the pre-0.14 form of the option
    }
    return std::make_unique<Metaspace>(replacement, scheme, bool_or(j, "split", path, true));
  }
  if (type == "Digits")
    return std::make_unique<CharSplit>(CharClass::Digit,
                                       bool_or(j, "individual_digits", path, false)
                                           ? SplitBehavior::Isolated
                                           : SplitBehavior::Contiguous);
  if (type == "Punctuation")
    return std::make_unique<CharSplit>(CharClass::Punctuation,
                                       behavior_from_json(j, path, SplitBehavior::Isolated));
  if (type == "WhitespaceSplit")
    return std::make_unique<CharSplit>(CharClass::Whitespace, SplitBehavior::Removed);
  if (type == "Whitespace")  // keeps the matches: words and runs of other non-space characters
    return make_regex_split("\\w+|[^\\w\\s]+", SplitBehavior::Removed, true);
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(std::make_unique<CharSplit>(CharClass::Whitespace, SplitBehavior::Removed));
    steps.push_back(std::make_unique<CharSplit>(CharClass::Punctuation, SplitBehavior::Isolated));
    return make_sequence(std::move(steps));
  }
  if (type == "CharDelimiterSplit") {
    std::string d = string_field(j, "delimiter", path);
    size_t pos = 0;
    if (d.empty() || unicode::find_invalid_utf8(d) != std::string::npos)
      throw Error("{}: expected a single character", child(path, "delimiter"));
    char32_t c = unicode::decode_utf8(d, pos);
    if (pos != d.size()) throw Error("{}: expected a single character", child(path, "delimiter"));
    return std::make_unique<CharSplit>(CharClass::Delimiter, SplitBehavior::Removed, c);
  }
  if (type == "Sequence") {
    const std::string list_path = child(path, "pretokenizers");
    const json& list = require_array(field(j, "pretokenizers", path), list_path);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); i++) {
      // Only the last step may leave the byte mapping to the model.
      bool last = i + 1 == list.size();
      steps.push_back(from_json(list[i], child(list_path, i), defer_byte_mapping && last,
                                last ? deferred : nullptr));
    }
    return make_sequence(std::move(steps));
  }
  throw Error(
      "{}: pre-tokenizer type \"{}\" is not supported (supported: ByteLevel, Split, Metaspace, "
      "Digits, Punctuation, Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, "
      "Sequence)",
      path, type);
}

}  // namespace

std::unique_ptr<PreTokenizer> make_regex_split(const std::string& pattern, SplitBehavior behavior,
                                               bool invert) {
  return std::make_unique<RegexSplit>(pattern, behavior, invert);
}

std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex,
                                              bool map_bytes) {
  return std::make_unique<ByteLevel>(add_prefix_space, use_regex, map_bytes);
}

std::unique_ptr<PreTokenizer> make_sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) {
  return std::make_unique<Sequence>(std::move(steps));
}

std::unique_ptr<PreTokenizer> pre_tokenizer_from_json(const json& j, const std::string& path,
                                                      bool defer_byte_mapping,
                                                      bool* byte_mapping_deferred) {
  if (byte_mapping_deferred != nullptr) *byte_mapping_deferred = false;
  return from_json(j, path, defer_byte_mapping, byte_mapping_deferred);
}

}  // namespace distill
