#include "distill/token_alignment.h"

#include <cstring>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace distill {

std::vector<std::string> vocabulary_bytes(const Tokenizer& tokenizer) {
  std::vector<std::string> bytes(size_t(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); id++)
    if (!tokenizer.is_special(id)) bytes[id] = tokenizer.decode({id});
  return bytes;
}

void TokenizedText::append(TokenizedText&& other) {
  if (ids.empty()) {
    const int64_t base = starts.empty() ? 0 : starts.back();
    *this = std::move(other);
    for (int64_t& s : starts) s += base;
    return;
  }
  const int64_t base = starts.empty() ? 0 : starts.back();
  if (!starts.empty()) starts.pop_back();
  ids.insert(ids.end(), other.ids.begin(), other.ids.end());
  for (int64_t s : other.starts) starts.push_back(base + s);
}

TokenizedText tokenize_with_offsets(const Tokenizer& tokenizer,
                                    const std::vector<std::string>& token_bytes,
                                    std::string_view text, const std::string& what) {
  TokenizedText out;
  out.ids = tokenizer.encode(text);
  out.starts.resize(out.ids.size() + 1);
  int64_t at = 0;
  for (size_t i = 0; i < out.ids.size(); i++) {
    out.starts[i] = at;
    const int32_t id = out.ids[i];
    const std::string& b = id >= 0 && size_t(id) < token_bytes.size() ? token_bytes[id] : "";
    if (b.empty() || size_t(at) + b.size() > text.size() ||
        std::memcmp(text.data() + at, b.data(), b.size()) != 0)
      throw Error("{} ({} tokenizer): token {} (id {}) at byte {} does not decode to the text "
                  "there; cross-tokenizer alignment needs tokens whose bytes concatenate to the "
                  "text (byte-level BPE or bytes)", what, tokenizer.kind(), i, id, at);
    at += int64_t(b.size());
  }
  if (size_t(at) != text.size())
    throw Error("{} ({} tokenizer): its tokens cover {} of the text's {} bytes; cross-tokenizer "
                "alignment needs tokens whose bytes concatenate to the text", what,
                tokenizer.kind(), at, text.size());
  out.starts.back() = at;
  return out;
}

std::vector<AlignedRow> align_by_next_token_start(const int64_t* student_next, int Ns,
                                                  int32_t student_row0,
                                                  const int64_t* teacher_next, int Nt,
                                                  int32_t teacher_row0) {
  std::vector<AlignedRow> rows;
  int i = 0, j = 0;
  while (i < Ns && j < Nt) {
    if (student_next[i] < 0) {
      i++;
    } else if (teacher_next[j] < 0) {
      j++;
    } else if (student_next[i] < teacher_next[j]) {
      i++;
    } else if (teacher_next[j] < student_next[i]) {
      j++;
    } else {
      rows.push_back({student_row0 + i, teacher_row0 + j});
      i++, j++;
    }
  }
  return rows;
}

}  // namespace distill
