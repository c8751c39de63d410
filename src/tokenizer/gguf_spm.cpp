#include "tokenizer/gguf_spm.h"

#include <queue>

#include "core/error.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/unicode.h"

namespace distill {
namespace {

constexpr std::string_view kSpace = "\u2581";  // "▁", SentencePiece's visible space

class GgufSpmTokenizer final : public Tokenizer {
 public:
  explicit GgufSpmTokenizer(SpmVocab vocab) : v_(std::move(vocab)) {
    const size_t n = v_.tokens.size();
    DISTILL_CHECK(v_.scores.size() == n && v_.types.size() == n);
    std::vector<AddedToken> added;
    for (size_t id = 0; id < n; id++) {
      text_to_id_[v_.tokens[id]] = int32_t(id);  // a repeated text keeps the last id (llama.cpp)
      const VocabTokenType type = v_.types[id];
      // Control and unknown tokens are recognised in text only with parse_special;
      // user-defined ones always (llama.cpp's tokenizer_st_partition).
      if (type == VocabTokenType::Control || type == VocabTokenType::Unknown ||
          type == VocabTokenType::UserDefined)
        added.push_back({int32_t(id), v_.tokens[id], type != VocabTokenType::UserDefined, false,
                         false, false, false});
    }
    added_ = AddedVocabulary(std::move(added), nullptr);
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
      std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      auto it = text_to_id_.find(name);
      if (it == text_to_id_.end()) it = text_to_id_.find(std::string(1, char(b)));
      byte_ids_[b] = it == text_to_id_.end() ? v_.unk.value_or(-1) : it->second;
    }
  }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    if (text.size() > UINT32_MAX / 4)  // symbol offsets are 32-bit; escaping grows the text
      throw Error("tokenizer: a text of {} bytes is too long to encode at once (1 GiB at most)",
                  text.size());
    std::vector<int32_t> ids;
    if (options.add_special_tokens && v_.add_bos && v_.bos) ids.push_back(*v_.bos);
    if (!text.empty()) {
      std::vector<AddedVocabulary::Piece> pieces;
      added_.split(text, options.parse_special, false, pieces);
      bool previous_special = true;  // the text start counts as "after a special token"
      std::string escaped;
      for (const auto& p : pieces) {
        if (p.id >= 0) {
          ids.push_back(p.id);
          previous_special = true;
          continue;
        }
        escaped.clear();
        if (v_.add_space_prefix && previous_special) escaped += kSpace;
        for (char c : text.substr(p.begin, p.end - p.begin)) {
          if (c == ' ') escaped += kSpace;
          else escaped += c;
        }
        tokenize(escaped, ids);
        previous_special = false;
      }
    }
    if (options.add_special_tokens && v_.add_eos && v_.eos) ids.push_back(*v_.eos);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string text;
    bool first = true;
    for (int32_t id : ids) {
      check_id(id, "decode");
      std::string piece;
      const std::string& t = v_.tokens[size_t(id)];
      switch (v_.types[size_t(id)]) {
        case VocabTokenType::Normal:
          for (size_t i = 0; i < t.size();) {
            if (t.compare(i, kSpace.size(), kSpace) == 0) {
              piece += ' ';
              i += kSpace.size();
            } else {
              piece += t[i++];
            }
          }
          break;
        case VocabTokenType::Byte:
          if (int b = byte_of_token(t); b >= 0) piece += char(b);
          else piece = t;  // a byte token not spelled <0xXX>: shown as written
          break;
        case VocabTokenType::UserDefined:
          piece = t;
          break;
        case VocabTokenType::Control:
          if (skip_special) continue;
          piece = t;
          break;
        case VocabTokenType::Unknown:
          if (skip_special) continue;
          piece = "\u2585";  // llama.cpp shows an unknown token as "▅"
          break;
        case VocabTokenType::Unused:
          continue;
      }
      // The space that add_space_prefix put before the text is not part of it.
      if (first && v_.add_space_prefix && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
      first = false;
      text += piece;
    }
    return text;
  }

  int vocab_size() const override { return int(v_.tokens.size()); }
  std::string token_text(int32_t id) const override {
    check_id(id, "token_text");
    return v_.tokens[size_t(id)];
  }
  std::optional<int32_t> token_id(std::string_view text) const override {
    auto it = text_to_id_.find(text);
    if (it == text_to_id_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<int32_t> bos_id() const override { return v_.bos; }
  std::optional<int32_t> eos_id() const override { return v_.eos; }
  bool is_special(int32_t id) const override {
    if (id < 0 || size_t(id) >= v_.tokens.size()) return false;
    VocabTokenType t = v_.types[size_t(id)];
    return t == VocabTokenType::Control || t == VocabTokenType::Unknown;
  }
  std::string fingerprint() const override { return v_.fingerprint; }
  std::string kind() const override { return "gguf-llama"; }

 private:
  struct Symbol {
    int32_t prev, next;
    uint32_t offset, n;  // bytes of the escaped text; n == 0 once merged into its left neighbour
  };
  struct Bigram {
    int32_t left, right;
    float score;
    size_t size;  // bytes of the merged piece: a stale entry no longer matches it
  };

  void check_id(int32_t id, const char* what) const {
    if (id < 0 || size_t(id) >= v_.tokens.size())
      throw Error("{}: id {} is outside the vocabulary [0, {})", what, id, v_.tokens.size());
  }

  // The byte a "<0xXX>" token stands for, or -1.
  static int byte_of_token(const std::string& t) {
    auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                            : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  void tokenize(const std::string& text, std::vector<int32_t>& out) const;

  SpmVocab v_;
  StringMap<int32_t> text_to_id_;
  AddedVocabulary added_;
  int32_t byte_ids_[256];
};

void GgufSpmTokenizer::tokenize(const std::string& text, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  for (size_t offset = 0; offset < text.size();) {
    size_t len = std::min(text.size() - offset,
                          size_t(unicode::utf8_length(static_cast<unsigned char>(text[offset]))));
    int32_t index = int32_t(symbols.size());
    symbols.push_back({index - 1, offset + len == text.size() ? -1 : index + 1, uint32_t(offset),
                       uint32_t(len)});
    offset += len;
  }
  // The queue's top is the highest score, then the leftmost pair.
  auto by_priority = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(by_priority)> queue(by_priority);
  StringMap<std::pair<int32_t, int32_t>> rev_merge;  // merged text -> the symbols it came from
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    std::string_view piece(text.data() + symbols[size_t(left)].offset,
                           symbols[size_t(left)].n + symbols[size_t(right)].n);
    auto it = text_to_id_.find(piece);
    if (it == text_to_id_.end()) return;
    queue.push({left, right, v_.scores[size_t(it->second)], piece.size()});
    rev_merge[std::string(piece)] = {left, right};
  };
  for (int32_t i = 1; i < int32_t(symbols.size()); i++) try_add(i - 1, i);
  while (!queue.empty()) {
    Bigram top = queue.top();
    queue.pop();
    Symbol& left = symbols[size_t(top.left)];
    Symbol& right = symbols[size_t(top.right)];
    if (left.n == 0 || right.n == 0 || left.n + right.n != top.size) continue;  // stale
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }
  // A final symbol that is not a token is split back along its merges, down to bytes.
  auto resegment = [&](auto& self, const Symbol& s) -> void {
    std::string_view piece(text.data() + s.offset, s.n);
    if (auto it = text_to_id_.find(piece); it != text_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
    if (auto it = rev_merge.find(piece); it != rev_merge.end()) {
      self(self, symbols[size_t(it->second.first)]);
      self(self, symbols[size_t(it->second.second)]);
      return;
    }
    for (unsigned char b : piece)
      if (byte_ids_[b] >= 0) out.push_back(byte_ids_[b]);
  };
  for (int32_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[size_t(i)].next)
    resegment(resegment, symbols[size_t(i)]);
}

}  // namespace

std::unique_ptr<Tokenizer> make_gguf_spm_tokenizer(SpmVocab vocab) {
  return std::make_unique<GgufSpmTokenizer>(std::move(vocab));
}

}  // namespace distill
