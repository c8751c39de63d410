#include "tokenizer/added_vocab.h"

#include <algorithm>

#include "tokenizer/normalizer.h"
#include "tokenizer/unicode.h"

namespace distill {
namespace {

bool is_word_char(char32_t c) { return c == '_' || unicode::is_alphanumeric(c); }

// The code point that ends at text[end) (text valid UTF-8, end > 0).
char32_t codepoint_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) start--;
  return unicode::decode_utf8(text, start);
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer)
    : tokens_(std::move(tokens)) {
  for (uint32_t i = 0; i < tokens_.size(); i++) {
    by_id_.emplace(tokens_[i].id, i);
    by_content_.emplace(tokens_[i].content, i);
  }
  for (int g = 0; g < 2; g++) {
    Group& group = groups_[g];
    group.contents.resize(tokens_.size());
    std::vector<uint32_t> members;
    for (uint32_t i = 0; i < tokens_.size(); i++) {
      const AddedToken& t = tokens_[i];
      if (t.content.empty() || t.normalized != (g == 1)) continue;
      group.contents[i] = t.content;
      if (g == 1 && normalizer != nullptr) normalizer->normalize(group.contents[i]);
      if (!group.contents[i].empty()) members.push_back(i);
    }
    std::sort(members.begin(), members.end(), [&](uint32_t a, uint32_t b) {
      const std::string& ca = group.contents[a];
      const std::string& cb = group.contents[b];
      if (ca[0] != cb[0]) return uint8_t(ca[0]) < uint8_t(cb[0]);
      if (ca.size() != cb.size()) return ca.size() > cb.size();
      return a < b;
    });
    group.order = members;
    for (uint32_t i : members) group.any_plain = group.any_plain || !tokens_[i].special;
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
      while (b < 256 && k < members.size() && uint8_t(group.contents[members[k]][0]) < b) k++;
      group.first_byte_start[size_t(b)] = uint32_t(b == 256 ? members.size() : k);
    }
  }
}

void AddedVocabulary::split(std::string_view text, bool parse_special, bool normalized_tokens,
                            std::vector<Piece>& out) const {
  const Group& group = groups_[normalized_tokens ? 1 : 0];
  size_t text_start = 0;  // start of the pending plain-text piece
  auto emit_text = [&](size_t end) {
    if (end > text_start) out.push_back({uint32_t(text_start), uint32_t(end), -1});
  };
  if (group.order.empty() || (!parse_special && !group.any_plain)) {
    emit_text(text.size());
    return;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const uint8_t b = uint8_t(text[pos]);
    const uint32_t first = group.first_byte_start[b], last = group.first_byte_start[b + 1];
    if (first == last) {  // no token starts with this byte (the common case)
      pos++;
      continue;
    }
    const AddedToken* match = nullptr;
    size_t match_len = 0;
    for (uint32_t k = first; k < last && match == nullptr; k++) {
      const uint32_t index = group.order[k];
      const AddedToken& t = tokens_[index];
      const std::string& content = group.contents[index];
      if (t.special && !parse_special) continue;
      if (text.compare(pos, content.size(), content) != 0) continue;
      if (t.single_word) {
        const size_t end = pos + content.size();
        if (pos > 0 && is_word_char(codepoint_before(text, pos))) continue;
        size_t after = end;
        if (end < text.size() && is_word_char(unicode::decode_utf8(text, after))) continue;
      }
      match = &t;
      match_len = content.size();
    }
    if (match == nullptr) {
      pos += size_t(unicode::utf8_length(b));
      continue;
    }
    size_t begin = pos, end = pos + match_len;
    if (match->lstrip) {
      while (begin > text_start && unicode::is_whitespace(codepoint_before(text, begin))) {
        begin--;
        while (begin > text_start && (uint8_t(text[begin]) & 0xC0) == 0x80) begin--;
      }
    }
    if (match->rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!unicode::is_whitespace(unicode::decode_utf8(text, next))) break;
        end = next;
      }
    }
    emit_text(begin);
    out.push_back({uint32_t(begin), uint32_t(end), match->id});
    text_start = pos = end;
  }
  emit_text(text.size());
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

}  // namespace distill
