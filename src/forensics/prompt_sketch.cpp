#include "forensics/prompt_sketch.h"

#include "core/error.h"

namespace distill {

namespace {

bool word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

}  // namespace

uint32_t sketch_word_hash(std::string_view word) {
  uint32_t h = 2166136261u;
  for (unsigned char c : word) {
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    h = (h ^ c) * 16777619u;
  }
  return h;
}

std::vector<uint32_t> prompt_sketch(std::string_view text) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < text.size() && out.size() < kSketchWords) {
    while (i < text.size() && !word_byte((unsigned char)text[i])) i++;
    const size_t start = i;
    while (i < text.size() && word_byte((unsigned char)text[i])) i++;
    if (i > start) out.push_back(sketch_word_hash(text.substr(start, i - start)));
  }
  return out;
}

std::string sketch_to_blob(const std::vector<uint32_t>& sketch) {
  std::string blob(sketch.size() * 4, '\0');
  for (size_t i = 0; i < sketch.size(); i++)
    for (int b = 0; b < 4; b++) blob[i * 4 + size_t(b)] = char((sketch[i] >> (8 * b)) & 0xff);
  return blob;
}

std::vector<uint32_t> sketch_from_blob(std::string_view blob, const std::string& what) {
  if (blob.size() % 4 != 0)
    throw Error("{}: prompt sketch of {} bytes is not a whole number of 4-byte word hashes", what,
                blob.size());
  std::vector<uint32_t> out(blob.size() / 4);
  for (size_t i = 0; i < out.size(); i++)
    for (int b = 0; b < 4; b++)
      out[i] |= uint32_t((unsigned char)blob[i * 4 + size_t(b)]) << (8 * b);
  return out;
}

}  // namespace distill
