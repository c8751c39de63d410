// UTF-8 decoding and the Unicode properties and transforms the tokenizers need. Properties,
// normalization forms and case mapping come from ICU; nothing here is a hand-made Unicode table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace distill::unicode {

// Bytes in the UTF-8 sequence that starts with `lead` (1 for a byte that cannot start one, so a
// scan over malformed text still advances).
inline int utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// The code point starting at text[pos]; advances pos past it. `text` must be valid UTF-8.
inline char32_t decode_utf8(std::string_view text, size_t& pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  unsigned char b = s[pos];
  if (b < 0x80) {
    pos += 1;
    return b;
  }
  if ((b >> 5) == 0x6) {
    char32_t c = (char32_t(b & 0x1F) << 6) | (s[pos + 1] & 0x3F);
    pos += 2;
    return c;
  }
  if ((b >> 4) == 0xE) {
    char32_t c = (char32_t(b & 0x0F) << 12) | (char32_t(s[pos + 1] & 0x3F) << 6) |
                 (s[pos + 2] & 0x3F);
    pos += 3;
    return c;
  }
  char32_t c = (char32_t(b & 0x07) << 18) | (char32_t(s[pos + 1] & 0x3F) << 12) |
               (char32_t(s[pos + 2] & 0x3F) << 6) | (s[pos + 3] & 0x3F);
  pos += 4;
  return c;
}

void append_utf8(std::string& out, char32_t c);

// Byte offset of the first byte that is not part of well-formed UTF-8 (overlong forms,
// surrogates and code points above U+10FFFF are malformed), or npos when all of `text` is valid.
size_t find_invalid_utf8(std::string_view text);

inline bool is_ascii(std::string_view text) {
  for (unsigned char c : text)
    if (c >= 0x80) return false;
  return true;
}

bool is_whitespace(char32_t c);     // the White_Space property (Rust char::is_whitespace)
bool is_numeric(char32_t c);        // general category N* (Rust char::is_numeric)
bool is_alphanumeric(char32_t c);   // Alphabetic or N* (Rust char::is_alphanumeric)
bool is_punctuation(char32_t c);    // ASCII punctuation or category P* (HF's is_punctuation)
bool is_nonspacing_mark(char32_t c);  // category Mn (what HF's StripAccents removes)

enum class NormalForm { NFC, NFD, NFKC, NFKD };
// Hugging Face tokenizers normalize with the Rust crate unicode-normalization-alignments
// 0.1.12, whose tables are Unicode 9.0: code points assigned since (e.g. U+0898..U+089F, Arabic
// marks of Unicode 14 with combining classes 230/220) are neither decomposed nor reordered.
// Measured with tokenizers 0.22.2 against Unicode 17 over every code point (alone and between
// combining marks): NFC/NFD differ for 175 code points, all of Unicode 10.0 or later.
inline constexpr const char* kHfNormalizationUnicodeVersion = "9.0";
// `text` in the normalization form; returns false (and leaves `out` alone) when the text is
// already in that form, so the common case costs no copy.
bool normalize(std::string_view text, NormalForm form, std::string& out);
// Full Unicode lowercase mapping (root locale, final sigma in context), as Rust's to_lowercase.
std::string to_lower(std::string_view text);

}  // namespace distill::unicode
