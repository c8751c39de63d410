#include "model/model.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "infer/kv_cache.h"

namespace distill {

Model::Model(const ModelConfig& config, bool trainable) : config_(config), trainable_(trainable) {
  config_.validate("model config");
  specs_ = config_.arch == Arch::Gpt2 ? gpt2_param_specs(config_) : llama_param_specs(config_);
  size_t offset = 0;
  for (size_t i = 0; i < specs_.size(); i++) {
    ParamSpec& s = specs_[i];
    s.numel = 1;
    for (int64_t d : s.shape) s.numel *= size_t(d);
    s.offset = offset;
    offset += s.numel;
    index_[s.name] = i;
  }
  params_.resize(offset);
  if (trainable_) grads_.resize(offset);
  impl_ = config_.arch == Arch::Gpt2 ? make_gpt2(*this) : make_llama(*this);
}

const ParamSpec* Model::find_param(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

float* Model::param(const std::string& name) {
  const ParamSpec* s = find_param(name);
  if (!s) throw Error("model has no parameter '{}'", name);
  return params_.data() + s->offset;
}

float* Model::grad(const std::string& name) {
  const ParamSpec* s = find_param(name);
  if (!s) throw Error("model has no parameter '{}'", name);
  return trainable_ ? grads_.data() + s->offset : nullptr;
}

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}
}  // namespace

void Model::init_weights(uint64_t seed) {
  Rng rng(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.num_layers);
  for (const ParamSpec& s : specs_) {
    float* p = params_.data() + s.offset;
    const bool is_norm = s.name.find("norm") != std::string::npos ||
                         s.name.find("ln_") != std::string::npos;
    if (s.shape.size() == 1) {
      const float v = is_norm && ends_with(s.name, ".weight") ? 1.0f : 0.0f;
      for (size_t i = 0; i < s.numel; i++) p[i] = v;
      continue;
    }
    const bool residual_out = ends_with(s.name, "c_proj.weight") ||
                              ends_with(s.name, "o_proj.weight") ||
                              ends_with(s.name, "down_proj.weight");
    const double std = residual_out ? residual_std : 0.02;
    for (size_t i = 0; i < s.numel; i++) p[i] = float(std * rng.normal());
  }
}

void Bf16Copies::add(const float* w, int rows, int cols, Bf16Weight* copy) {
  // Each copy starts on a 64-byte boundary (32 elements) of the 64-byte-aligned buffer.
  auto take = [&](size_t n) {
    const size_t at = size_;
    size_ += (n + 31) / 32 * 32;
    return at;
  };
  const size_t fwd = take(bf16_packed_weight_size(rows, cols, false));
  const size_t dinp = take(bf16_packed_weight_size(rows, cols, true));
  sources_.push_back(Source{w, rows, cols, fwd, dinp, copy});
}

void Bf16Copies::refresh() {
  if (sources_.empty()) return;
  if (data_.size() * 2 < size_) data_.resize((size_ + 1) / 2);
  uint16_t* base = reinterpret_cast<uint16_t*>(data_.data());
  for (const Source& s : sources_) {
    pack_bf16_weight(base + s.fwd, s.w, s.rows, s.cols, false);
    pack_bf16_weight(base + s.dinp, s.w, s.rows, s.cols, true);
    *s.copy = Bf16Weight{base + s.fwd, base + s.dinp};
  }
}

float* Model::forward(const int32_t* ids, int B, int T) {
  if (T > config_.max_position && config_.arch == Arch::Gpt2)
    throw Error("sequence length {} exceeds the model's n_positions {}", T, config_.max_position);
  for (size_t i = 0; i < size_t(B) * T; i++)
    if (ids[i] < 0 || ids[i] >= config_.vocab_size)
      throw Error("token id {} at position {} is outside the vocabulary [0, {})", ids[i], i,
                  config_.vocab_size);
  forwarded_ = true;
  last_checkpointing_ = checkpointing_;
  return impl_->forward(ids, B, T);
}

void Model::backward(const float* dlogits) {
  if (!trainable_)
    throw Error("internal error: backward on an inference-only model (loaded by load_model_dir)");
  impl_->backward(dlogits);
  hidden_grads_.assign(hidden_grads_.size(), nullptr);
  attention_grads_.assign(attention_grads_.size(), nullptr);
}

void Model::add_attention_grad(int l, const float* datt) {
  if (l < 0 || l >= config_.num_layers)
    throw Error("layer {} out of range: the model has layers 0..{}", l, config_.num_layers - 1);
  if (last_checkpointing_ && l + 1 < config_.num_layers)
    throw Error("internal error: attention gradients of layer {} need a forward without "
                "checkpointing", l);
  attention_grads_.resize(size_t(config_.num_layers), nullptr);
  DISTILL_CHECK(attention_grads_[l] == nullptr);
  attention_grads_[l] = datt;
}

const float* Model::hidden(int i) const {
  DISTILL_CHECK(forwarded_);
  if (i < 0 || i > config_.num_layers)
    throw Error("hidden state {} out of range: the model has boundaries 0..{}", i,
                config_.num_layers);
  return impl_->hidden(i);
}

LayerActivations Model::layer_activations(int l) const {
  DISTILL_CHECK(forwarded_);
  if (l < 0 || l >= config_.num_layers)
    throw Error("layer {} out of range: the model has layers 0..{}", l, config_.num_layers - 1);
  if (last_checkpointing_ && l + 1 < config_.num_layers)
    throw Error("internal error: layer {}'s activations need a forward without checkpointing", l);
  return impl_->layer_activations(l);
}

void Model::add_hidden_grad(int i, const float* dh) {
  if (i < 0 || i > config_.num_layers)
    throw Error("hidden state {} out of range: the model has boundaries 0..{}", i,
                config_.num_layers);
  hidden_grads_.resize(size_t(config_.num_layers) + 1, nullptr);
  DISTILL_CHECK(hidden_grads_[i] == nullptr);
  hidden_grads_[i] = dh;
}

size_t training_buffer_floats(const ModelConfig& config, int B, int T, bool checkpointing,
                              bool bf16) {
  return config.arch == Arch::Gpt2
             ? gpt2_training_buffer_floats(config, B, T, checkpointing, bf16)
             : llama_training_buffer_floats(config, B, T, checkpointing, bf16);
}

float* Model::forward_rows(const InferBatch& batch, KvCache& cache) {
  for (size_t r = 0; r < batch.size(); r++) {
    const int32_t id = batch.tokens[r];
    if (id < 0 || id >= config_.vocab_size)
      throw Error("token id {} is outside the vocabulary [0, {})", id, config_.vocab_size);
    const int slot = batch.slots[r], pos = batch.positions[r];
    if (slot < 0 || slot >= cache.slots) throw Error("cache slot {} out of range", slot);
    if (pos >= cache.max_len)
      throw Error("position {} exceeds the context of {} tokens", pos, cache.max_len);
    DISTILL_CHECK(pos >= 0 && pos <= cache.length[slot] + int(r));
  }
  float* logits = impl_->forward_rows(batch, cache);
  for (size_t r = 0; r < batch.size(); r++)
    cache.length[batch.slots[r]] = std::max(cache.length[batch.slots[r]], batch.positions[r] + 1);
  return logits;
}

void Model::set_weight_type(WeightType type, bool keep_f32) {
  if (type != WeightType::F32 && trainable_)
    throw Error("{} weights are for inference: a trainable model keeps f32 weights",
                weight_type_name(type));
  if (released_floats_ > 0)
    throw Error("the model's f32 weights were released for {} inference: reload it to change the "
                "weight type", weight_type_name(weight_type_));
  const std::vector<const QMatrix*> copies = impl_->set_weight_type(type);
  weight_type_ = type;
  qweight_bytes_ = 0;
  for (const QMatrix* q : copies) qweight_bytes_ += q->bytes();
  if (keep_f32 || type == WeightType::F32) return;
  // Give back the whole pages inside each copied matrix, except the embedding table, which the
  // token lookup still reads (a tied head copies it).
  const long page = sysconf(_SC_PAGESIZE);
  const float* embedding = params_.data() + specs_.front().offset;
  for (const QMatrix* q : copies) {
    DISTILL_CHECK(q->source() != nullptr);
    if (q->source() == embedding) continue;
    const uintptr_t begin = reinterpret_cast<uintptr_t>(q->source());
    const uintptr_t end = begin + size_t(q->rows()) * q->cols() * sizeof(float);
    const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
    released_floats_ += size_t(q->rows()) * q->cols();
    if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }
}

size_t Model::weight_bytes() const {
  return (params_.size() - released_floats_) * sizeof(float) + qweight_bytes_;
}

std::unique_ptr<KvCache> Model::make_cache(int slots, int max_len) const {
  return make_kv_cache(*this, slots, max_len);  // f32, a pool for every slot's max_len
}

}  // namespace distill
