#include "tokenizer/unicode_classes.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

namespace distill::unicode {

namespace ut = unicode_tables;
using ut::Range;

namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kSurrogateFirst = 0xD800, kSurrogateLast = 0xDFFF;

using CategoryMask = uint32_t;
constexpr CategoryMask bit(int category) { return CategoryMask(1) << category; }
constexpr CategoryMask span(int first, int last) {  // categories first..last of the enum
  CategoryMask m = 0;
  for (int c = first; c <= last; c++) m |= bit(c);
  return m;
}
constexpr CategoryMask kLetter = span(ut::kLu, ut::kLo), kMark = span(ut::kMn, ut::kMe),
                       kNumber = span(ut::kNd, ut::kNo), kPunct = span(ut::kPc, ut::kPo),
                       kSymbol = span(ut::kSm, ut::kSo), kSeparator = span(ut::kZs, ut::kZp),
                       kOther = span(ut::kCc, ut::kCn);

constexpr const auto& kShortNames = ut::kCategoryNames;

// The groups PCRE2 can test with one \p{X}; in pcre2_class, a group whose members all qualify
// is written once.
struct Group {
  const char* name;
  CategoryMask members;
};
constexpr std::array<Group, 7> kGroups = {{{"L", kLetter},
                                           {"M", kMark},
                                           {"N", kNumber},
                                           {"P", kPunct},
                                           {"S", kSymbol},
                                           {"Z", kSeparator},
                                           {"C", kOther}}};

// Long names (PropertyValueAliases.txt), loose-matched.
struct NamedMask {
  const char* name;
  CategoryMask mask;
};
constexpr NamedMask kLongNames[] = {
    {"uppercaseletter", bit(ut::kLu)},   {"lowercaseletter", bit(ut::kLl)},
    {"titlecaseletter", bit(ut::kLt)},   {"casedletter", span(ut::kLu, ut::kLt)},
    {"modifierletter", bit(ut::kLm)},    {"otherletter", bit(ut::kLo)},
    {"letter", kLetter},                 {"nonspacingmark", bit(ut::kMn)},
    {"spacingmark", bit(ut::kMc)},       {"enclosingmark", bit(ut::kMe)},
    {"mark", kMark},                     {"combiningmark", kMark},
    {"decimalnumber", bit(ut::kNd)},     {"letternumber", bit(ut::kNl)},
    {"othernumber", bit(ut::kNo)},       {"number", kNumber},
    {"connectorpunctuation", bit(ut::kPc)}, {"dashpunctuation", bit(ut::kPd)},
    {"openpunctuation", bit(ut::kPs)},   {"closepunctuation", bit(ut::kPe)},
    {"initialpunctuation", bit(ut::kPi)}, {"finalpunctuation", bit(ut::kPf)},
    {"otherpunctuation", bit(ut::kPo)},  {"punctuation", kPunct},
    {"mathsymbol", bit(ut::kSm)},        {"currencysymbol", bit(ut::kSc)},
    {"modifiersymbol", bit(ut::kSk)},    {"othersymbol", bit(ut::kSo)},
    {"symbol", kSymbol},                 {"spaceseparator", bit(ut::kZs)},
    {"lineseparator", bit(ut::kZl)},     {"paragraphseparator", bit(ut::kZp)},
    {"separator", kSeparator},           {"control", bit(ut::kCc)},
    {"format", bit(ut::kCf)},            {"surrogate", bit(ut::kCs)},
    {"privateuse", bit(ut::kCo)},        {"unassigned", bit(ut::kCn)},
    {"other", kOther},                   {"lc", span(ut::kLu, ut::kLt)},
};

std::string loose(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ' ' || c == '_' || c == '-') continue;
    out += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
  }
  return out;
}

// The UCD's code points of the categories in `mask` (unicode_tables.h: unlisted = Cn).
CodePointSet categories_set(CategoryMask mask) {
  CodePointSet set;
  char32_t next = 0;  // the first code point after the previous table range
  for (size_t i = 0; i < ut::kGeneralCategorySize; i++) {
    const ut::CategoryRange& r = ut::kGeneralCategory[i];
    if ((mask & bit(ut::kCn)) && r.first > next) set.add(next, r.first - 1);
    if (mask & bit(r.category)) set.add(r.first, r.last);
    next = r.last + 1;
  }
  if ((mask & bit(ut::kCn)) && next <= kMaxCodePoint) set.add(next, kMaxCodePoint);
  return set;
}

CodePointSet table_set(const Range* table, size_t size) {
  CodePointSet set;
  for (size_t i = 0; i < size; i++) set.add(table[i].first, table[i].last);
  return set;
}

// Whether all of first..last is in `ranges` (sorted, disjoint, non-adjacent).
bool covers(const std::vector<Range>& ranges, char32_t first, char32_t last) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), first,
                             [](char32_t c, const Range& r) { return c < r.first; });
  if (it == ranges.begin()) return false;
  --it;
  return it->first <= first && last <= it->last;
}

// Whether PCRE2's tables are the ones kPcre2GeneralCategory was read from.
bool pcre2_tables_match() {
  static const bool match = [] {
    char version[64] = {};
    if (pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, version) < 0) return false;
    return std::strcmp(version, ut::kPcre2UnicodeVersion) == 0;
  }();
  return match;
}

void append_code_point(std::string& out, char32_t c) { fmt::format_to(std::back_inserter(out), "\\x{{{:x}}}", uint32_t(c)); }

// A set written for PCRE2: \p{..} items PCRE2 tests natively, and ranges for the rest.
struct ClassParts {
  std::string natives, ranges;
  size_t items = 0;
};

ClassParts class_parts(const CodePointSet& set, bool use_native) {
  ClassParts parts;
  CodePointSet rest = set;
  if (use_native) {
    // A category PCRE2 puts wholly inside the set is tested natively; the rest are ranges.
    const std::vector<Range>& ranges = set.ranges();
    CategoryMask inside = ~CategoryMask(0) & ~bit(ut::kCs);  // surrogates never occur
    for (size_t i = 0; i < ut::kPcre2GeneralCategorySize; i++) {
      const ut::CategoryRange& r = ut::kPcre2GeneralCategory[i];
      if (r.category != ut::kCs && !covers(ranges, r.first, r.last)) inside &= ~bit(r.category);
    }
    CodePointSet native;
    for (size_t i = 0; i < ut::kPcre2GeneralCategorySize; i++) {
      const ut::CategoryRange& r = ut::kPcre2GeneralCategory[i];
      if (r.category != ut::kCs && (inside & bit(r.category))) native.add(r.first, r.last);
    }
    CategoryMask written = 0;
    for (const Group& g : kGroups) {
      const CategoryMask members = g.members & ~bit(ut::kCs);
      if ((inside & members) == members) {
        parts.natives += fmt::format("\\p{{{}}}", g.name);
        written |= members;
        parts.items++;
      }
    }
    for (int c = 0; c < ut::kCategoryCount; c++) {
      if (c == ut::kCs || !(inside & bit(c)) || (written & bit(c))) continue;
      parts.natives += fmt::format("\\p{{{}}}", kShortNames[c]);
      parts.items++;
    }
    // rest = set minus native = complement(complement(set) + native)
    CodePointSet outside = set.complement();
    outside.add(native);
    rest = outside.complement();
  }
  // A range may grow over code points the natives already match: ranges of the rest that lie in
  // one range of the set are written as that range (fewer items, same union).
  const std::vector<Range>& whole = set.ranges();
  std::vector<Range> written;
  for (const Range& r : rest.ranges()) {
    auto it = std::upper_bound(whole.begin(), whole.end(), r.first,
                               [](char32_t c, const Range& w) { return c < w.first; });
    const Range& within = *std::prev(it);  // rest is a subset of set: some range holds r
    if (!written.empty() && written.back().last >= within.first) continue;  // already written
    written.push_back(within);
  }
  for (const Range& r : written) {
    append_code_point(parts.ranges, r.first);
    if (r.last > r.first) {
      parts.ranges += '-';
      append_code_point(parts.ranges, r.last);
    }
    parts.items++;
  }
  return parts;
}

}  // namespace

void CodePointSet::add(char32_t first, char32_t last) {
  if (first > last) std::swap(first, last);
  last = std::min(last, kMaxCodePoint);
  if (first > kMaxCodePoint) return;
  if (first <= kSurrogateLast && last >= kSurrogateFirst) {  // leave the surrogates out
    if (first < kSurrogateFirst) ranges_.push_back({first, kSurrogateFirst - 1});
    if (last > kSurrogateLast) ranges_.push_back({kSurrogateLast + 1, last});
  } else {
    ranges_.push_back({first, last});
  }
  normalized_ = false;
}

void CodePointSet::add(const CodePointSet& other) {
  for (const Range& r : other.ranges()) ranges_.push_back(r);
  normalized_ = false;
}

const std::vector<Range>& CodePointSet::ranges() const {
  if (!normalized_) {
    std::sort(ranges_.begin(), ranges_.end(),
              [](const Range& a, const Range& b) { return a.first < b.first; });
    std::vector<Range> merged;
    for (const Range& r : ranges_) {
      if (!merged.empty() && r.first <= merged.back().last + 1)
        merged.back().last = std::max(merged.back().last, r.last);
      else
        merged.push_back(r);
    }
    ranges_ = std::move(merged);
    normalized_ = true;
  }
  return ranges_;
}

CodePointSet CodePointSet::complement() const {
  CodePointSet out;
  char32_t next = 0;
  for (const Range& r : ranges()) {
    if (r.first > next) out.add(next, r.first - 1);
    next = r.last + 1;
  }
  if (next <= kMaxCodePoint) out.add(next, kMaxCodePoint);
  return out;
}

bool CodePointSet::contains(char32_t c) const {
  const std::vector<Range>& r = ranges();
  return covers(r, c, c);
}

std::optional<CodePointSet> property_set(std::string_view name) {
  const std::string key = loose(name);
  for (int c = 0; c < ut::kCategoryCount; c++)
    if (key == loose(kShortNames[c])) return categories_set(bit(c));
  for (const Group& g : kGroups)
    if (key == loose(g.name)) return categories_set(g.members);
  for (const NamedMask& n : kLongNames)
    if (key == n.name) return categories_set(n.mask);
  if (key == "whitespace") return table_set(ut::kWhiteSpace, ut::kWhiteSpaceSize);
  if (key == "alphabetic") return table_set(ut::kAlphabetic, ut::kAlphabeticSize);
  if (key == "any") return CodePointSet{}.complement();
  return std::nullopt;
}

std::optional<CodePointSet> escape_set(char letter) {
  const bool negate = letter >= 'A' && letter <= 'Z';
  CodePointSet set;
  switch (negate ? char(letter - 'A' + 'a') : letter) {
    case 's':  // White_Space (PCRE2's \s leaves out U+0085)
      set = table_set(ut::kWhiteSpace, ut::kWhiteSpaceSize);
      break;
    case 'd':
      set = categories_set(bit(ut::kNd));
      break;
    case 'w':
      // Oniguruma's word characters: Alphabetic, marks, decimal digits, connector punctuation,
      // and the Latin-1 superscripts and fractions its single-byte table marks as word
      // (U+00B2 U+00B3 U+00B9 U+00BC..U+00BE; other No are not), measured against Hugging
      // Face's library (Oniguruma 6.9) over every code point.
      set = table_set(ut::kAlphabetic, ut::kAlphabeticSize);
      set.add(categories_set(kMark | bit(ut::kNd) | bit(ut::kPc)));
      set.add(0xB2, 0xB3);
      set.add(0xB9);
      set.add(0xBC, 0xBE);
      break;
    case 'h':  // Oniguruma's \h is a hex digit (PCRE2's is horizontal space)
      set.add('0', '9');
      set.add('A', 'F');
      set.add('a', 'f');
      break;
    default:
      return std::nullopt;
  }
  return negate ? set.complement() : set;
}

std::string pcre2_class(const CodePointSet& set) {
  if (set.empty()) return "[^\\x{0}-\\x{10ffff}]";
  const CodePointSet complement = set.complement();
  if (complement.empty()) return "[\\x{0}-\\x{10ffff}]";
  const bool native = pcre2_tables_match();
  const ClassParts positive = class_parts(set, native);
  const ClassParts negative = class_parts(complement, native);
  if (negative.items < positive.items) return "[^" + negative.natives + negative.ranges + "]";
  // PCRE2 10.42's JIT is slower on one class mixing \p{..} and ranges than on two classes, one
  // alternative each (disjoint and one code point long, so they mean the same as one class). \p{L}+
  // with Unicode 15's 13 extra letter ranges on the multilingual sample, regex alone: one mixed
  // class 235 MB/s, two alternatives 307 MB/s, PCRE2's \p{L}+ 374 MB/s.
  if (!positive.natives.empty() && !positive.ranges.empty())
    return "(?:[" + positive.natives + "]|[" + positive.ranges + "])";
  return "[" + positive.natives + positive.ranges + "]";
}

}  // namespace distill::unicode
