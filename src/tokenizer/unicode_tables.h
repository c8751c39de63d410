// Unicode property tables generated at build time from the Unicode Character Database
// (tools/gen_unicode_tables.cpp, run by cmake/unicode_tables.cmake on Debian's unicode-data),
// for the pre-tokenizer regexes (regex.cpp). Every table is sorted by code point, and its
// ranges neither overlap nor touch (adjacent ranges with the same value are merged).
#pragma once
#include <cstddef>
#include <cstdint>

namespace distill::unicode_tables {

// General_Category values, in this order in the tables (the generator writes the numbers).
enum Category : uint8_t {
  kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo, kPc, kPd, kPs, kPe,
  kPi, kPf, kPo, kSm, kSc, kSk, kSo, kZs, kZl, kZp, kCc, kCf, kCs, kCo, kCn,
  kCategoryCount
};
// Their short names (PropertyValueAliases.txt), in the same order: the generator reads and
// writes categories by these, and regex classes name PCRE2's \p{..} by them.
inline constexpr const char* kCategoryNames[kCategoryCount] = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};

struct Range {
  char32_t first, last;  // inclusive
};
struct CategoryRange {
  char32_t first, last;  // inclusive
  uint8_t category;      // a Category
};

extern const char kUcdVersion[];           // the UCD's version, e.g. "15.0.0"
extern const char kPcre2UnicodeVersion[];  // the Unicode version of PCRE2's own tables, e.g. "14.0.0"

// The UCD's general category of every assigned code point (and of surrogates and private use);
// a code point in no range is unassigned (Cn).
extern const CategoryRange kGeneralCategory[];
extern const size_t kGeneralCategorySize;
// What PCRE2's built-in tables (the library linked at build time) say for every code point but
// the surrogates, which are Cs: ranges cover U+0000..U+10FFFF.
extern const CategoryRange kPcre2GeneralCategory[];
extern const size_t kPcre2GeneralCategorySize;
// Binary properties: White_Space (PropList.txt), Alphabetic (DerivedCoreProperties.txt).
extern const Range kWhiteSpace[];
extern const size_t kWhiteSpaceSize;
extern const Range kAlphabetic[];
extern const size_t kAlphabeticSize;

}  // namespace distill::unicode_tables
