#include "infer/batch_decoder.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "infer/generator.h"

namespace distill {

BatchDecoder::BatchDecoder(Model& model, int max_batch, int context, const DecoderOptions& o)
    : model_(model), context_(context), prefill_chunk_(o.prefill_chunk), slots_(size_t(max_batch)) {
  if (max_batch <= 0) throw Error("batch size must be positive");
  if (context < 2) throw Error("context must hold a prompt token and a new one, got {}", context);
  if (o.prefill_chunk < 0) throw Error("prefill chunk of {} rows", o.prefill_chunk);
  cache_ = make_kv_cache(model, max_batch, context - 1, o.kv);
}

int BatchDecoder::slot_of(int id) const {
  for (size_t s = 0; s < slots_.size(); s++)
    if (slots_[s].live && slots_[s].request.id == id) return int(s);
  throw Error("internal error: no live sequence {}", id);
}

const std::vector<int32_t>& BatchDecoder::context_of(int id) const {
  return slots_[size_t(slot_of(id))].context;
}

bool BatchDecoder::admit(DecodeRequest r) {
  const int P = int(r.prompt.size());
  if (P == 0) throw Error("prompt {} is empty", r.id);
  if (P >= context_)
    throw Error("prompt {} has {} tokens: no room to generate within the context of {}", r.id, P,
                context_);
  if (r.max_tokens < 1) throw Error("sequence {} asks for {} new tokens", r.id, r.max_tokens);
  // Positions it can run: every token but the last one sampled.
  const int positions = std::min(int64_t(P) + r.max_tokens, int64_t(context_)) - 1;
  int free = -1;
  for (size_t s = 0; s < slots_.size() && free < 0; s++)
    if (!slots_[s].live) free = int(s);
  if (free < 0) return false;
  cache_->reset(free);
  if (!cache_->reserve(free, positions)) return false;
  Slot& slot = slots_[size_t(free)];
  slot.live = true;
  slot.context = r.prompt;
  slot.prefilled = 0;
  slot.generated = 0;
  slot.rng.reseed(r.seed);
  slot.request = std::move(r);
  live_++;
  return true;
}

void BatchDecoder::finish(int id) {
  const int s = slot_of(id);
  slots_[size_t(s)].live = false;
  cache_->reset(s);
  live_--;
}

void BatchDecoder::clear() {
  for (size_t s = 0; s < slots_.size(); s++) {
    slots_[s].live = false;
    cache_->reset(int(s));
  }
  live_ = 0;
}

int BatchDecoder::first_tokens_due() const {
  int due = 0;
  for (const Slot& a : slots_) {
    const int P = int(a.request.prompt.size());
    if (a.live && a.prefilled < P && (prefill_chunk_ == 0 || P - a.prefilled <= prefill_chunk_))
      due++;
  }
  return due;
}

const std::vector<DecodedToken>& BatchDecoder::step(LogitsProcessor* processor, Rows rows) {
  out_.clear();
  batch_.clear();
  row_slot_.clear();
  last_prompt_rows_ = last_decode_rows_ = 0;
  if (live_ == 0) return out_;
  for (size_t s = 0; s < slots_.size(); s++) {
    Slot& a = slots_[s];
    if (!a.live) continue;
    const int P = int(a.request.prompt.size());
    const int end =
        a.prefilled < P && prefill_chunk_ > 0 ? std::min(P, a.prefilled + prefill_chunk_) : P;
    if (rows == Rows::kFirstTokens && !(a.prefilled < P && end == P)) continue;
    if (a.prefilled < P) {
      for (int t = a.prefilled; t < end; t++) batch_.add(a.context[size_t(t)], int(s), t, t + 1 == P);
      last_prompt_rows_ += end - a.prefilled;
      a.prefilled = end;
      if (end == P) row_slot_.push_back(int(s));
    } else {
      batch_.add(a.context.back(), int(s), int(a.context.size()) - 1, true);
      last_decode_rows_++;
      row_slot_.push_back(int(s));
    }
  }
  if (batch_.size() == 0) return out_;
  float* logits = model_.forward_rows(batch_, *cache_);
  const int V = model_.config().vocab_size;
  if (processor) raw_.resize(row_slot_.size() * size_t(V));
  for (size_t m = 0; m < row_slot_.size(); m++) {
    Slot& a = slots_[size_t(row_slot_[m])];
    float* row = logits + m * size_t(V);
    const float* raw = nullptr;
    if (a.request.raw_logits) {
      raw = row;
      if (processor) {
        // The processor changes the row in place; the caller wants it as the model gave it.
        float* copy = raw_.data() + m * size_t(V);
        std::memcpy(copy, row, sizeof(float) * size_t(V));
        raw = copy;
      }
    }
    if (processor) processor->process(a.request.id, a.context, row, V);
    const int32_t tok = sample_token(row, V, a.request.sampling, a.rng);
    a.context.push_back(tok);
    a.generated++;
    DecodedToken d;
    d.id = a.request.id;
    d.token = tok;
    d.raw = raw;
    d.generated = a.generated;
    d.at_limit = a.generated >= a.request.max_tokens || int(a.context.size()) >= context_;
    out_.push_back(d);
  }
  return out_;
}

}  // namespace distill
