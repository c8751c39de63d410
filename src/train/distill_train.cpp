#include "train/distill_train.h"

#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/dist.h"
#include "core/error.h"
#include "data/dataset.h"
#include "distill/losses.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "train/distill_task.h"
#include "train/cross_tokenizer_task.h"

namespace distill {
namespace fs = std::filesystem;

std::string model_tokenizer_fingerprint(const std::string& dir) {
  const SafetensorsModel weights = SafetensorsModel::open(dir);
  const auto& meta = weights.metadata();
  auto it = meta.find("distill_tokenizer");
  return it == meta.end() ? "" : it->second;
}

std::vector<int> parse_layer_list(const std::string& text, int num_layers) {
  std::vector<int> layers;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int layer = -1;
    try {
      size_t used = 0;
      layer = std::stoi(item, &used);
      if (used != item.size()) layer = -1;
    } catch (const std::exception&) {
    }
    if (layer < 0 || layer >= num_layers)
      throw Error("--keep-layers '{}': '{}' is not a layer of the teacher (0..{})", text, item,
                  num_layers - 1);
    if (!layers.empty() && layer <= layers.back())
      throw Error("--keep-layers '{}': layers must be increasing", text);
    layers.push_back(layer);
  }
  if (layers.empty()) throw Error("--keep-layers is empty");
  return layers;
}

ModelConfig config_keeping_layers(const ModelConfig& teacher, const std::vector<int>& layers) {
  ModelConfig c = teacher;
  c.num_layers = int(layers.size());
  return c;
}

namespace {
// "model.layers.7.mlp..." -> 7 and the prefix/suffix around it; -1 when not a layer tensor.
int layer_of(const std::string& name, std::string& prefix, std::string& suffix) {
  for (const char* p : {"model.layers.", "transformer.h."}) {
    if (name.rfind(p, 0) != 0) continue;
    const size_t start = std::strlen(p), dot = name.find('.', start);
    prefix = p;
    suffix = name.substr(dot);
    return std::stoi(name.substr(start, dot - start));
  }
  return -1;
}
}  // namespace

void copy_kept_layers(const Model& teacher, Model& student, const std::vector<int>& layers) {
  for (const ParamSpec& s : student.param_specs()) {
    std::string prefix, suffix, source = s.name;
    const int l = layer_of(s.name, prefix, suffix);
    if (l >= 0) source = prefix + std::to_string(layers[l]) + suffix;
    const ParamSpec* t = teacher.find_param(source);
    if (!t || t->numel != s.numel) throw Error("teacher has no parameter '{}' to copy", source);
    std::memcpy(student.params() + s.offset, teacher.params() + t->offset, s.numel * sizeof(float));
  }
}

namespace {

// Offline distillation from a dataset of top-k teacher log-probabilities (`distill generate` /
// `distill score`): random records, cut to seq-len, loss on the positions the teacher scored.
// The last val_fraction of the records is held out for evaluation.
class OfflineDistillTask final : public DistillTaskBase {
 public:
  explicit OfflineDistillTask(const DistillTrainOptions& o)
      : DistillTaskBase(o), data_(DatasetReader::open(o.dataset)) {
    const int64_t n = data_.size();
    if (n < 2) throw Error("dataset {} has {} records: too few to train and evaluate", o.dataset, n);
    n_val_ = std::max<int64_t>(1, int64_t(double(n) * o.val_fraction));
    n_train_ = n - n_val_;
  }

  ModelConfig model_config() override {
    const ModelConfig c = student_config(data_.header().tokenizer_fingerprint,
                                         int(data_.header().vocab_size), "the dataset " + o_.dataset);
    data_.check_compatible(data_.header().tokenizer_fingerprint, c.vocab_size);
    return c;
  }

  StepResult step(Model& model, Rng& rng) override {
    const int B = o_.loop.batch_size, A = o_.loop.grad_accum;
    // Draw the whole step's records first: their target count normalizes the step's loss.
    batches_.resize(A);
    double normalizer = 0.0;
    for (int a = 0; a < A; a++) {
      std::vector<int64_t> picks(B);
      for (int b = 0; b < B; b++) picks[b] = int64_t(rng.below(uint64_t(n_train_)));
      build(batches_[a], picks, &rng);
      for (float w : batches_[a].weights) normalizer += w;
    }
    KdLossResult total;
    int64_t tokens = 0;
    for (int a = 0; a < A; a++) {
      total.loss += run(model, batches_[a], normalizer, true, total);
      tokens += int64_t(batches_[a].ids.size());
    }
    allreduce(total);
    return StepResult{total.loss, tokens, terms(total)};
  }

  float evaluate(Model& model) override {
    const int B = o_.loop.batch_size;
    const int64_t count = std::min<int64_t>(n_val_, int64_t(B) * o_.loop.eval_batches);
    std::vector<Batch> batches;
    double normalizer = 0.0;
    for (int64_t start = 0; start < count; start += B) {
      std::vector<int64_t> picks;
      for (int64_t i = start; i < std::min(count, start + B); i++) picks.push_back(n_train_ + i);
      batches.emplace_back();
      build(batches.back(), picks, nullptr);
      for (float w : batches.back().weights) normalizer += w;
    }
    KdLossResult total;
    double loss = 0.0;
    for (Batch& b : batches) loss += run(model, b, normalizer, false, total);
    dist::allreduce_sum(&loss, 1);
    return float(loss);
  }

  TaskMemory memory() const override {
    TaskMemory m;  // the dataset is mapped, and read a batch at a time
    const auto [b0, b1] = dist::share(o_.loop.batch_size);  // this rank's rows
    m.dlogits = int64_t(sizeof(float) * size_t(b1 - b0) * o_.loop.seq_len *
                        size_t(data_.header().vocab_size));
    return m;
  }

  nlohmann::json identity() const override {
    return {{"task", "distill-offline"}, {"dataset", o_.dataset}, {"records", data_.size()},
            {"loss", spec_.describe()}};
  }

 private:
  struct Batch {
    int B = 0, T = 0;
    std::vector<DatasetEntry> entries;
    std::vector<int32_t> ids, targets;
    std::vector<float> weights;
    std::vector<SparseTeacherRow> rows;
  };

  // Cuts each record to at most T+1 tokens (a random window when longer and rng is given) and
  // lays out ids, targets, weights (1 where the teacher scored the target) and teacher rows.
  void build(Batch& b, const std::vector<int64_t>& picks, Rng* rng) {
    const int T = o_.loop.seq_len;
    b.B = int(picks.size());
    b.T = T;
    b.entries.resize(picks.size());
    b.ids.assign(size_t(b.B) * T, 0);
    b.targets.assign(size_t(b.B) * T, -1);
    b.weights.assign(size_t(b.B) * T, 0.0f);
    b.rows.assign(size_t(b.B) * T, SparseTeacherRow{nullptr, nullptr, 0, 0.0f});
    for (int i = 0; i < b.B; i++) {
      DatasetEntry& e = b.entries[i];
      data_.read(picks[i], e);
      const int n = int(e.tokens.size());
      int start = 0;
      if (n - 1 > T) {
        // Windows must keep scored targets: start no later than the last scored window.
        const int latest = n - 1 - T;
        start = rng ? int(rng->below(uint64_t(latest + 1))) : 0;
      }
      const int len = std::min(T, n - 1 - start);
      for (int t = 0; t < len; t++) {
        const size_t pos = size_t(i) * T + t;
        b.ids[pos] = e.tokens[start + t];
        const int target = start + t + 1;
        const int row = target - e.first_target;
        if (row < 0 || row >= e.rows.rows()) continue;
        b.targets[pos] = e.tokens[target];
        b.weights[pos] = 1.0f;
        b.rows[pos] = SparseTeacherRow{e.rows.ids.data() + size_t(row) * e.rows.k,
                                       e.rows.logprobs.data() + size_t(row) * e.rows.k,
                                       e.rows.count(row), e.rows.tail[row]};
      }
    }
  }

  // This rank's share of the batch's rows (core/dist.h); the loss is its part of the sum.
  double run(Model& model, Batch& b, double normalizer, bool backward, KdLossResult& total) {
    const auto [b0, b1] = dist::share(b.B);
    if (b1 <= b0) return 0.0;
    const int N = int(b1 - b0) * b.T, V = model.config().vocab_size;
    const size_t at = size_t(b0) * b.T;
    const float* logits = model.forward(b.ids.data() + at, int(b1 - b0), b.T);
    if (backward) {
      dlogits_.assign(size_t(N) * V, 0.0f);
    }
    const KdLossResult r = kd_loss_sparse(spec_, logits, b.rows.data() + at,
                                          b.targets.data() + at, b.weights.data() + at, N, V,
                                          normalizer, backward ? dlogits_.data() : nullptr);
    if (backward) {
      for (int k = 0; k < 8; k++) total.per_term[k] += r.per_term[k];
      model.backward(dlogits_.data());
    }
    return r.loss;
  }

  DatasetReader data_;
  int64_t n_train_ = 0, n_val_ = 0;
  std::vector<Batch> batches_;
  std::vector<float> dlogits_;
};

}  // namespace

namespace {

// The combinations the tasks cannot run, as errors (before anything slow is loaded).
void check_task_options(const DistillTrainOptions& o, bool cross_tokenizer) {
  if (cross_tokenizer) {
    if (o.on_policy_fraction > 0.0f || !o.hidden_loss.empty() || !o.attention_loss.empty())
      throw Error("--on-policy-fraction, --hidden-loss and --attention-loss need a student that "
                  "shares the teacher's tokenizer (not with a different --student-tokenizer)");
    return;
  }
  if (o.dataset.empty() == o.data.empty())
    throw Error("give either --dataset (offline: teacher log-probs) or --data with --teacher "
                "(online: the teacher scores the text as training goes)");
  if (o.dataset.empty()) return;
  if (!o.teacher_endpoint.empty())
    throw Error("--teacher-endpoint scores --data text online; a --dataset already holds its "
                "teacher's log-probabilities");
  if (!o.hidden_loss.empty() || !o.attention_loss.empty())
    throw Error("--hidden-loss and --attention-loss need the teacher in process (--teacher with "
                "--data): a dataset holds no hidden states or attention maps");
  if (o.on_policy_fraction > 0.0f)
    throw Error("--on-policy-fraction needs the teacher in process (--teacher with --data): "
                "a dataset's teacher cannot score the student's new text");
}

}  // namespace

void distill_train(const DistillTrainOptions& options, const ProgressFn& on_progress) {
  const bool cross = is_cross_tokenizer(options);
  check_task_options(options, cross);
  if (cross) {
    run_training(options.loop, *make_cross_tokenizer_task(options), on_progress);
  } else if (!options.dataset.empty()) {
    OfflineDistillTask task(options);
    run_training(options.loop, task, on_progress);
  } else {
    run_training(options.loop, *make_online_distill_task(options), on_progress);
  }
}

MemoryEstimate distill_train_memory_estimate(const DistillTrainOptions& options) {
  const bool cross = is_cross_tokenizer(options);
  check_task_options(options, cross);
  if (cross) return estimate_training_memory(options.loop, *make_cross_tokenizer_task(options));
  if (!options.dataset.empty()) {
    OfflineDistillTask task(options);
    return estimate_training_memory(options.loop, task);
  }
  return estimate_training_memory(options.loop, *make_online_distill_task(options));
}

}  // namespace distill
