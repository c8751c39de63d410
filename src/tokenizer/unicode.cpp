#include "tokenizer/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>

#include "core/error.h"

namespace distill::unicode {

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xC0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(char(0xE0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  }
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Eight ASCII bytes at a time: most text is mostly ASCII.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char b = s[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    auto cont = [&](size_t k) { return i + k < n && (s[i + k] & 0xC0) == 0x80; };
    if (b >= 0xC2 && b <= 0xDF) {
      if (!cont(1)) return i;
      i += 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      if (!cont(1) || !cont(2)) return i;
      unsigned char b1 = s[i + 1];
      if (b == 0xE0 && b1 < 0xA0) return i;   // overlong
      if (b == 0xED && b1 >= 0xA0) return i;  // UTF-16 surrogate
      i += 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
      if (!cont(1) || !cont(2) || !cont(3)) return i;
      unsigned char b1 = s[i + 1];
      if (b == 0xF0 && b1 < 0x90) return i;   // overlong
      if (b == 0xF4 && b1 >= 0x90) return i;  // above U+10FFFF
      i += 4;
    } else {
      return i;
    }
  }
  return std::string_view::npos;
}

bool is_whitespace(char32_t c) { return u_isUWhiteSpace(UChar32(c)); }

bool is_numeric(char32_t c) {
  int8_t t = u_charType(UChar32(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_alphanumeric(char32_t c) { return u_isUAlphabetic(UChar32(c)) || is_numeric(c); }

bool is_punctuation(char32_t c) {
  if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) ||
                       (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
  return u_ispunct(UChar32(c));
}

bool is_nonspacing_mark(char32_t c) { return u_charType(UChar32(c)) == U_NON_SPACING_MARK; }

namespace {

const icu::Normalizer2& full_normalizer(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::NFC: n = icu::Normalizer2::getNFCInstance(status); break;
    case NormalForm::NFD: n = icu::Normalizer2::getNFDInstance(status); break;
    case NormalForm::NFKC: n = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalForm::NFKD: n = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || n == nullptr)
    throw Error("unicode normalization: ICU has no data for this form ({})", u_errorName(status));
  return *n;
}

// The code points assigned as of kHfNormalizationUnicodeVersion (frozen: safe to share).
const icu::UnicodeSet& hf_known_code_points() {
  static const icu::UnicodeSet* known = [] {
    UErrorCode status = U_ZERO_ERROR;
    auto* set = new icu::UnicodeSet(
        icu::UnicodeString::fromUTF8(std::string("[:age=") + kHfNormalizationUnicodeVersion + ":]"),
        status);
    if (U_FAILURE(status))
      throw Error("unicode normalization: ICU has no Age data ({})", u_errorName(status));
    set->freeze();
    return set;
  }();
  return *known;
}

// The form as of kHfNormalizationUnicodeVersion: code points assigned later pass through as
// they are and split the text into separately normalized runs, as in tables that do not know
// them (no decomposition, combining class 0, no composition).
struct VersionedNormalizer {
  icu::FilteredNormalizer2 normalizer;
  explicit VersionedNormalizer(NormalForm form)
      : normalizer(full_normalizer(form), hf_known_code_points()) {}
};

const icu::Normalizer2& normalizer_for(NormalForm form) {
  static const VersionedNormalizer nfc(NormalForm::NFC), nfd(NormalForm::NFD),
      nfkc(NormalForm::NFKC), nfkd(NormalForm::NFKD);
  switch (form) {
    case NormalForm::NFC: return nfc.normalizer;
    case NormalForm::NFD: return nfd.normalizer;
    case NormalForm::NFKC: return nfkc.normalizer;
    case NormalForm::NFKD: return nfkd.normalizer;
  }
  throw Error("unicode normalization: unknown form");
}

}  // namespace

bool normalize(std::string_view text, NormalForm form, std::string& out) {
  // ASCII is invariant under all four forms.
  if (is_ascii(text)) return false;
  const icu::Normalizer2& n = normalizer_for(form);
  UErrorCode status = U_ZERO_ERROR;
  icu::StringPiece piece(text.data(), int32_t(text.size()));
  if (n.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return false;
  status = U_ZERO_ERROR;
  std::string result;
  result.reserve(text.size() + text.size() / 4);
  icu::StringByteSink<std::string> sink(&result);
  n.normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) throw Error("unicode normalization failed: {}", u_errorName(status));
  out = std::move(result);
  return true;
}

std::string to_lower(std::string_view text) {
  std::string result;
  if (is_ascii(text)) {
    result.assign(text);
    for (char& c : result)
      if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return result;
  }
  result.reserve(text.size());
  icu::StringByteSink<std::string> sink(&result);
  UErrorCode status = U_ZERO_ERROR;
  icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(text.data(), int32_t(text.size())), sink,
                            nullptr, status);
  if (U_FAILURE(status)) throw Error("lowercasing failed: {}", u_errorName(status));
  return result;
}

}  // namespace distill::unicode
