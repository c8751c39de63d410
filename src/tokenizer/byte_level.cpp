#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode.h"

namespace distill::byte_level {
namespace {

struct Tables {
  std::array<char32_t, 256> char_of{};
  std::array<std::string, 256> utf8_of;
  Tables() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 256;
    for (int b = 0; b < 256; b++) {
      char_of[b] = printable(b) ? char32_t(b) : next++;
      unicode::append_utf8(utf8_of[b], char_of[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string_view char_of_byte(uint8_t b) { return tables().utf8_of[b]; }

int byte_of_char(char32_t c) {
  // Printable Latin-1 map to themselves; the 68 others were numbered from U+0100 in byte order.
  if (c < 256) {
    if ((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
      return int(c);
    return -1;
  }
  if (c < 256 + 68) {
    static const auto inverse = [] {
      std::array<uint8_t, 68> inv{};
      for (int b = 0; b < 256; b++)
        if (tables().char_of[b] >= 256) inv[tables().char_of[b] - 256] = uint8_t(b);
      return inv;
    }();
    return inverse[c - 256];
  }
  return -1;
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += char_of_byte(b);
  return out;
}

std::optional<std::string> decode(std::string_view text) {
  if (unicode::find_invalid_utf8(text) != std::string_view::npos) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    int b = byte_of_char(unicode::decode_utf8(text, pos));
    if (b < 0) return std::nullopt;
    out.push_back(char(b));
  }
  return out;
}

}  // namespace distill::byte_level
