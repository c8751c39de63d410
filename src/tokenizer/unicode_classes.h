// Sets of code points for the pre-tokenizer regexes: the Unicode properties that Hugging Face's
// patterns use (\p{..}, \s, \d, \w, as Oniguruma defines them), built from the tables generated
// from the Unicode Character Database (unicode_tables.h), and written out as PCRE2 character
// classes that keep PCRE2's fast built-in property tests wherever they agree with the UCD.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace distill::unicode {

// A set of code points in U+0000..U+10FFFF. Surrogates (U+D800..U+DFFF) never occur in UTF-8
// text, so sets leave them out.
class CodePointSet {
 public:
  void add(char32_t first, char32_t last);  // inclusive; any order of calls
  void add(char32_t c) { add(c, c); }
  void add(const CodePointSet& other);
  CodePointSet complement() const;
  bool contains(char32_t c) const;
  bool empty() const { return ranges().empty(); }
  // Sorted, disjoint and non-adjacent.
  const std::vector<unicode_tables::Range>& ranges() const;

 private:
  mutable std::vector<unicode_tables::Range> ranges_;
  mutable bool normalized_ = true;
};

// The set a property name denotes, with Oniguruma's loose matching (case, spaces, '-' and '_'
// ignored): general categories by short or long name (Lu, Uppercase_Letter, L, Letter, LC, ...),
// White_Space, Alphabetic and Any. nullopt for a name these tables do not have.
std::optional<CodePointSet> property_set(std::string_view name);

// The escapes whose meaning in Oniguruma (Hugging Face's engine) is a Unicode set: 's' (White_Space),
// 'd' (Nd), 'w' (Oniguruma's word characters), 'h' (ASCII hex digits), and their upper-case
// complements. nullopt for any other letter.
std::optional<CodePointSet> escape_set(char letter);

// A PCRE2 (UTF mode) expression that matches exactly one code point of `set`: a character
// class, or one that never matches for an empty set. When the Unicode version of the PCRE2
// library running now is the one the tables were generated with, categories that PCRE2 puts
// wholly inside the set are written as \p{..} (a table look-up) and only the rest as ranges;
// otherwise everything is ranges (correct, slower on non-ASCII text).
std::string pcre2_class(const CodePointSet& set);

}  // namespace distill::unicode
