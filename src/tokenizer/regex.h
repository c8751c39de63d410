// Pre-tokenizer regular expressions, compiled with PCRE2 (UTF, JIT).
// Hugging Face tokenizers run their patterns with Oniguruma (Ruby syntax); the differences that
// change splits are bridged here: Unicode properties (\p{..}, \P{..}) and the escapes \s \d \w
// \h (and their complements) take their meaning from the Unicode Character Database the build
// was made with (unicode_classes.h), not from PCRE2's older tables (Unicode 14 in PCRE2 10.42);
// \s is White_Space (PCRE2 leaves out U+0085), \w is Oniguruma's word set, \h a hex digit; and
// `^`/`$` match at line boundaries.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace distill {

// Where a Regex's Unicode properties come from.
enum class RegexUnicode {
  kUcd,    // the tables generated from the UCD (unicode_tables.h): what tokenizers use
  kPcre2,  // PCRE2's own properties (only \s is bridged): for tests that show what the tables change
};

// The property source of Regex objects constructed without one (kUcd unless changed); returns
// the previous one. For tests and comparisons: tokenizers loaded afterwards use it.
RegexUnicode set_default_regex_unicode(RegexUnicode unicode);

// `pattern` in PCRE2 syntax with Oniguruma's meaning (what Regex compiles).
std::string translate_regex(std::string_view pattern, RegexUnicode unicode);

class Regex {
 public:
  // Throws distill::Error quoting the pattern and PCRE2's reason when it does not compile.
  explicit Regex(std::string pattern);
  Regex(std::string pattern, RegexUnicode unicode);
  ~Regex();
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(begin, end) for each non-empty match, left to right, not overlapping, with
  // byte offsets into `text`, which must be valid UTF-8 (callers validate once, up front).
  template <class OnMatch>
  void for_each_match(std::string_view text, OnMatch&& on_match) const {
    size_t start = 0, begin = 0, end = 0;
    while (start < text.size() && find(text, start, begin, end)) {
      if (end > begin) {
        on_match(begin, end);
        start = end;
      } else {
        start = begin + 1;  // an empty match: move on by one character
        while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
          start++;
      }
    }
  }

  // The first match at or after `start`: false when there is none.
  bool find(std::string_view text, size_t start, size_t& begin, size_t& end) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace distill
