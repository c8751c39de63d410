#include "train/pretrain.h"

#include "core/dist.h"
#include "core/error.h"
#include "data/text_corpus.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"
#include "train/lm_step.h"

namespace distill {
namespace {

std::unique_ptr<Tokenizer> pretrain_tokenizer(const std::string& path) {
  if (path.empty()) return nullptr;
  if (model_tokenizer_files(path).empty())
    throw Error("--tokenizer {}: expected a tokenizer.json, a tokenizer.model or a directory "
                "holding one", path);
  return load_tokenizer(path);
}

// Next-token cross-entropy on random windows of a tokenized corpus.
class PretrainTask final : public TrainTask {
 public:
  explicit PretrainTask(const PretrainOptions& o)
      : o_(o),
        tokenizer_(pretrain_tokenizer(o.tokenizer)),
        corpus_(TextCorpus::load(o.data, o.val_fraction, o.loop.seq_len + 1, tokenizer_.get())) {
    const size_t BT = size_t(o.loop.batch_size) * o.loop.seq_len;
    ids_.resize(BT * o.loop.grad_accum);
    targets_.resize(BT * o.loop.grad_accum);
  }

  ModelConfig model_config() override {
    ModelConfig c = o_.config.empty() ? model_preset(o_.preset) : ModelConfig::from_file(o_.config);
    const int vocab = tokenizer_ ? tokenizer_->vocab_size() : ByteTokenizer::kVocabSize;
    if (tokenizer_ && o_.config.empty()) c.vocab_size = vocab;  // a preset is a shape
    if (c.vocab_size < vocab)
      throw Error("model vocabulary ({}) is smaller than the {} tokenizer's {}", c.vocab_size,
                  tokenizer_ ? tokenizer_->kind() : "byte", vocab);
    if (c.arch == Arch::Gpt2 && o_.loop.seq_len > c.max_position)
      throw Error("seq-len {} exceeds the model's n_positions {}", o_.loop.seq_len, c.max_position);
    return c;
  }

  void init_model(Model& model, uint64_t seed) override { model.init_weights(seed); }

  StepResult step(Model& model, Rng& rng) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, A = o_.loop.grad_accum;
    const size_t BT = size_t(B) * T;
    // Sample every micro-batch first: the token count normalizes the whole step's loss.
    for (int a = 0; a < A; a++)
      corpus_.sample_train(rng, B, T, ids_.data() + a * BT, targets_.data() + a * BT);
    const int64_t count = count_targets(targets_.data(), targets_.size());
    // Under MPI each rank runs its share of every micro-batch's rows (core/dist.h).
    const auto [b0, b1] = dist::share(B);
    double loss[2] = {0.0, 0.0};  // summed loss, target count
    for (int a = 0; a < A && b1 > b0; a++) {
      const size_t at = a * BT + size_t(b0) * T;
      const LossSum l = lm_forward_backward(model, ids_.data() + at, targets_.data() + at,
                                            int(b1 - b0), T, 1.0f / float(count));
      loss[0] += l.sum;
      loss[1] += double(l.count);
    }
    dist::allreduce_sum(loss, 2);
    return StepResult{loss[1] > 0 ? loss[0] / loss[1] : 0.0, int64_t(BT) * A, {}};
  }

  float evaluate(Model& model) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len;
    std::vector<int32_t> ids(size_t(B) * T), targets(size_t(B) * T);
    const auto [b0, b1] = dist::share(B);
    double total[2] = {0.0, 0.0};  // summed loss, target count
    for (int i = 0; i < o_.loop.eval_batches && b1 > b0; i++) {
      corpus_.val_batch(i, o_.loop.eval_batches, B, T, ids.data(), targets.data());
      const size_t at = size_t(b0) * T;
      const LossSum l = lm_forward_loss(model, ids.data() + at, targets.data() + at,
                                        int(b1 - b0), T);
      total[0] += l.sum;
      total[1] += double(l.count);
    }
    dist::allreduce_sum(total, 2);
    return float(total[1] > 0 ? total[0] / total[1] : 0.0);
  }

  nlohmann::json identity() const override {
    nlohmann::json id = {{"task", "pretrain"}, {"data", o_.data}, {"val_fraction", o_.val_fraction}};
    if (tokenizer_) id["tokenizer"] = tokenizer_->fingerprint();
    return id;
  }

  std::map<std::string, std::string> model_metadata() const override {
    return {{"distill_tokenizer",
             tokenizer_ ? tokenizer_->fingerprint() : std::string(ByteTokenizer::kFingerprint)}};
  }

  std::vector<std::string> model_files() const override {
    return tokenizer_ ? model_tokenizer_files(o_.tokenizer) : std::vector<std::string>{};
  }

  TaskMemory memory() const override {
    TaskMemory m;
    m.data = int64_t(sizeof(int32_t) * (corpus_.train_tokens() + corpus_.val_tokens() +
                                        ids_.size() + targets_.size()));
    return m;
  }

 private:
  const PretrainOptions& o_;
  std::unique_ptr<Tokenizer> tokenizer_;  // null: byte-level
  TextCorpus corpus_;
  std::vector<int32_t> ids_, targets_;
};

}  // namespace

void pretrain(const PretrainOptions& options, const ProgressFn& on_progress) {
  PretrainTask task(options);
  run_training(options.loop, task, on_progress);
}

MemoryEstimate pretrain_memory_estimate(const PretrainOptions& options) {
  PretrainTask task(options);
  return estimate_training_memory(options.loop, task);
}

}  // namespace distill
