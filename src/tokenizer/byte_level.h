// GPT-2's reversible byte ↔ character mapping ("byte-level" BPE): each of the 256 byte values
// is shown as one printable Unicode character (printable Latin-1 bytes as themselves, the rest
// as U+0100 onwards in byte order), so that "Ġ" stands for a space and "Ċ" for a newline.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace distill::byte_level {

// The character that shows byte `b`, as UTF-8 (2 bytes at most).
std::string_view char_of_byte(uint8_t b);
// The byte a character shows, or -1 when it is not one of the 256.
int byte_of_char(char32_t c);

// Every byte of `bytes` as its character: the text byte-level BPE vocabularies are written in.
std::string encode(std::string_view bytes);
// The bytes a string of mapped characters shows, or nullopt when it holds other characters.
std::optional<std::string> decode(std::string_view text);

}  // namespace distill::byte_level
