#include "tokenizer/pipeline_tokenizer.h"

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "tokenizer/word_cache.h"
#include "tokenizer/unicode.h"

namespace distill {

PipelineTokenizer::PipelineTokenizer(PipelineParts parts) : parts_(std::move(parts)) {
  DISTILL_CHECK(parts_.model != nullptr);
  added_ = AddedVocabulary(parts_.added_tokens, parts_.normalizer.get());
  vocab_size_ = parts_.model->id_limit();
  for (const AddedToken& t : parts_.added_tokens) {
    if (t.id < 0 || t.id > BpeModel::kMaxId)
      throw Error("added token \"{}\" has id {} (expected 0..{})", t.content, t.id,
                  BpeModel::kMaxId);
    vocab_size_ = std::max(vocab_size_, t.id + 1);
  }
  for (const auto* ids : {&parts_.special_template.prefix, &parts_.special_template.suffix})
    for (int32_t id : *ids)
      if (id < 0 || id >= vocab_size_)
        throw Error("the post-processor adds id {}, outside the vocabulary [0, {})", id,
                    vocab_size_);
  added_kind_.assign(size_t(vocab_size_), 0);
  for (const AddedToken& t : parts_.added_tokens) added_kind_[size_t(t.id)] = t.special ? 2 : 1;
}

void PipelineTokenizer::encode_words(std::string_view text, bool at_text_start,
                                     std::vector<int32_t>& out) const {
  thread_local PreTokenized words;
  words.text.assign(text);
  words.spans.assign(1, Span{0, uint32_t(text.size())});
  if (parts_.pre_tokenizer) parts_.pre_tokenizer->apply(words, at_text_start);
  const BpeModel& model = *parts_.model;
  WordCache& cache = model.thread_cache();
  for (const Span& w : words.spans)
    model.encode_word(std::string_view(words.text.data() + w.begin, w.end - w.begin), out, cache);
}

// One stretch of raw text between added tokens: normalize, then cut at the added tokens that
// match normalized text, then pre-tokenize and encode each piece.
void PipelineTokenizer::encode_text(std::string_view text, bool at_text_start,
                                    std::vector<int32_t>& out) const {
  if (!parts_.normalizer) {
    encode_words(text, at_text_start, out);
    return;
  }
  std::string normalized(text);
  parts_.normalizer->normalize(normalized);
  if (normalized.empty()) return;
  if (!added_.has_normalized_tokens()) {
    encode_words(normalized, at_text_start, out);
    return;
  }
  std::vector<AddedVocabulary::Piece> pieces;
  added_.split(normalized, /*parse_special=*/true, /*normalized_tokens=*/true, pieces);
  for (const auto& p : pieces) {
    if (p.id >= 0) out.push_back(p.id);
    else
      encode_words(std::string_view(normalized).substr(p.begin, p.end - p.begin),
                   at_text_start && p.begin == 0, out);
  }
}

std::vector<int32_t> PipelineTokenizer::encode(std::string_view text,
                                               const EncodeOptions& options) const {
  if (size_t bad = unicode::find_invalid_utf8(text); bad != std::string_view::npos)
    throw Error("tokenizer: the text is not valid UTF-8 (byte {} of {})", bad, text.size());
  if (text.size() > UINT32_MAX / 2)  // offsets are 32-bit; normalizers may grow the text
    throw Error("tokenizer: a text of {} bytes is too long to encode at once (2 GiB at most)",
                text.size());
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (options.add_special_tokens)
    ids.insert(ids.end(), parts_.special_template.prefix.begin(),
               parts_.special_template.prefix.end());
  thread_local std::vector<AddedVocabulary::Piece> pieces;
  pieces.clear();
  added_.split(text, options.parse_special, /*normalized_tokens=*/false, pieces);
  for (const auto& p : pieces) {  // (encode_text splits into a vector of its own)
    if (p.id >= 0) ids.push_back(p.id);
    else encode_text(text.substr(p.begin, p.end - p.begin), p.begin == 0, ids);
  }
  if (options.add_special_tokens)
    ids.insert(ids.end(), parts_.special_template.suffix.begin(),
               parts_.special_template.suffix.end());
  return ids;
}

std::string PipelineTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string text;
  std::vector<std::string> run;  // model tokens waiting for the decoder
  bool first_run = true;
  auto flush = [&] {
    if (run.empty()) return;
    if (parts_.decoder) {
      parts_.decoder->decode_chain(run);
      for (const std::string& s : run) text += s;
    } else {
      for (size_t i = 0; i < run.size(); i++) text += (i > 0 || !first_run ? " " : "") + run[i];
    }
    run.clear();
    first_run = false;
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_)
      throw Error("decode: id {} is outside the vocabulary [0, {})", id, vocab_size_);
    const int8_t kind = added_kind_[size_t(id)];
    if (kind == 2 && skip_special) continue;
    if (kind != 0) {
      const AddedToken* t = added_.find(id);
      if (parts_.added_tokens_skip_decoder) {
        flush();
        text += t->content;
      } else {
        run.push_back(t->content);
      }
    } else if (parts_.model->has_id(id)) {
      run.push_back(parts_.model->token_text(id));
    }
  }
  flush();
  return text;
}

std::string PipelineTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size_)
    throw Error("token_text: id {} is outside the vocabulary [0, {})", id, vocab_size_);
  if (added_kind_[size_t(id)] != 0) return added_.find(id)->content;
  if (parts_.model->has_id(id)) return parts_.model->token_text(id);
  return "";
}

std::optional<int32_t> PipelineTokenizer::token_id(std::string_view text) const {
  if (auto id = added_.find(text)) return id;
  return parts_.model->token_id(text);
}

bool PipelineTokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size_ && added_kind_[size_t(id)] == 2;
}

}  // namespace distill
