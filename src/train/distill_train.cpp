#include "train/distill_train.h"

#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/dist.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/text_corpus.h"
#include "distill/losses.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"
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

// What online and offline distillation share: the student's origin and the loss spec.
class DistillTaskBase : public TrainTask {
 public:
  explicit DistillTaskBase(const DistillTrainOptions& o)
      : o_(o),
        spec_(KdLossSpec::parse(o.loss, o.temperature,
                                o.tail == "ignore" ? TailRule::Ignore : TailRule::Bucket)) {
    if (o.tail != "bucket" && o.tail != "ignore")
      throw Error("--tail '{}': expected bucket or ignore", o.tail);
    if (!o.teacher.empty()) teacher_ = load_model_dir(o.teacher);
  }

  // `fingerprint`/`vocab`: the teacher data's tokenizer (teacher model or dataset).
  ModelConfig student_config(const std::string& fingerprint, int vocab, const std::string& origin) {
    const int sources = !o_.student_config.empty() + !o_.student_preset.empty() +
                        !o_.init_from.empty() + o_.init_from_teacher;
    if (sources != 1)
      throw Error("choose exactly one student: --student-config, --student-preset, --init-from "
                  "or --init-from-teacher");
    ModelConfig c;
    std::string student_fp;  // a fresh student adopts the teacher data's tokenizer
    if (o_.init_from_teacher) {
      if (!teacher_) throw Error("--init-from-teacher needs --teacher");
      layers_ = parse_layer_list(o_.keep_layers, teacher_->config().num_layers);
      c = config_keeping_layers(teacher_->config(), layers_);
      student_fp = model_tokenizer_fingerprint(o_.teacher);
    } else if (!o_.init_from.empty()) {
      c = ModelConfig::from_file(o_.init_from + "/config.json");
      student_fp = model_tokenizer_fingerprint(o_.init_from);
    } else {
      c = o_.student_config.empty() ? model_preset(o_.student_preset)
                                    : ModelConfig::from_file(o_.student_config);
      if (o_.student_config.empty()) c.vocab_size = vocab;  // a preset is a shape
    }
    if (c.vocab_size != vocab)
      throw Error("student vocabulary ({} tokens) differs from {}'s ({}): teacher and student "
                  "must share a tokenizer", c.vocab_size, origin, vocab);
    if (!fingerprint.empty() && !student_fp.empty() && student_fp != fingerprint)
      throw Error("student tokenizer fingerprint {} differs from {}'s {}: teacher and student "
                  "must share a tokenizer", student_fp, origin, fingerprint);
    if (c.arch == Arch::Gpt2 && o_.loop.seq_len > c.max_position)
      throw Error("seq-len {} exceeds the student's n_positions {}", o_.loop.seq_len,
                  c.max_position);
    fingerprint_ = fingerprint;
    return c;
  }

  void init_model(Model& model, uint64_t seed) override {
    if (o_.init_from_teacher) {
      copy_kept_layers(*teacher_, model, layers_);
    } else if (!o_.init_from.empty()) {
      load_weights(model, SafetensorsModel::open(o_.init_from));
    } else {
      model.init_weights(seed);
    }
  }

  std::map<std::string, std::string> model_metadata() const override {
    if (fingerprint_.empty()) return {};
    return {{"distill_tokenizer", fingerprint_}};
  }

  // The student carries the tokenizer files of its starting checkpoint, else the teacher's.
  std::vector<std::string> model_files() const override {
    for (const std::string& dir : {o_.init_from, o_.teacher})
      if (!dir.empty())
        if (auto files = model_tokenizer_files(dir); !files.empty()) return files;
    return {};
  }

 protected:
  nlohmann::json terms(const KdLossResult& r) const {
    nlohmann::json j = nlohmann::json::object();
    for (const KdTerm& t : spec_.terms)
      j[std::string("loss_") + kd_loss_name(t.kind)] = r.per_term[int(t.kind)];
    return j;
  }
  static void add(KdLossResult& total, const KdLossResult& r) {
    total.loss += r.loss;
    for (int k = 0; k < 8; k++) total.per_term[k] += r.per_term[k];
  }
  // Under MPI: the sums of every rank's share (core/dist.h).
  static void allreduce(KdLossResult& r) {
    double v[10] = {r.loss};
    for (int k = 0; k < 8; k++) v[1 + k] = r.per_term[k];
    v[9] = double(r.positions);
    dist::allreduce_sum(v, 10);
    r.loss = v[0];
    for (int k = 0; k < 8; k++) r.per_term[k] = v[1 + k];
    r.positions = int64_t(v[9]);
  }

  const DistillTrainOptions& o_;
  KdLossSpec spec_;
  std::unique_ptr<Model> teacher_;
  std::string fingerprint_;
  std::vector<int> layers_;
};

// The tokenizer the text of online distillation is read with: the teacher's tokenizer files,
// or bytes (null) for a teacher without any (the byte-level models of `distill pretrain`).
std::unique_ptr<Tokenizer> teacher_text_tokenizer(const std::string& teacher) {
  if (teacher.empty() || model_tokenizer_files(teacher).empty()) return nullptr;
  return load_tokenizer(teacher);
}

// Online distillation on random windows of a text corpus (in the teacher's tokens): the frozen
// teacher's dense logits for every micro-batch.
class OnlineDistillTask final : public DistillTaskBase {
 public:
  explicit OnlineDistillTask(const DistillTrainOptions& o)
      : DistillTaskBase(o),
        tokenizer_(teacher_text_tokenizer(o.teacher)),
        corpus_(TextCorpus::load(o.data, o.val_fraction, o.loop.seq_len + 1, tokenizer_.get())) {
    if (!teacher_) throw Error("online distillation needs --teacher (a model directory)");
    // The teacher never runs backward: its forward need not keep every layer's activations.
    teacher_->set_checkpointing(true);
  }

  TaskMemory memory() const override {
    const ModelConfig& t = teacher_->config();
    const auto [b0, b1] = dist::share(o_.loop.batch_size);  // this rank's rows
    const int B = int(b1 - b0), T = o_.loop.seq_len, A = o_.loop.grad_accum;
    const size_t BT = size_t(B) * T;
    TaskMemory m;
    m.teacher_weights = model_arena_bytes(t, /*trainable=*/false);  // load_model_dir's
    if (spec_.needs_teacher())
      m.teacher_activations = int64_t(
          FloatBuffer::allocation_bytes(training_buffer_floats(t, B, T, true)));
    m.dlogits = int64_t(sizeof(float) * BT * size_t(t.vocab_size));
    const size_t global = size_t(o_.loop.batch_size) * T;  // every rank draws the whole batch
    m.data = int64_t(sizeof(int32_t) * (corpus_.train_tokens() + corpus_.val_tokens() +
                                        2 * global * A) + sizeof(float) * global);
    return m;
  }

  ModelConfig model_config() override {
    return student_config(model_tokenizer_fingerprint(o_.teacher), teacher_->config().vocab_size,
                          "the teacher " + o_.teacher);
  }

  StepResult step(Model& model, Rng& rng) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, A = o_.loop.grad_accum;
    const int V = model.config().vocab_size, N = B * T;
    const size_t BT = size_t(N);
    ids_.resize(BT * A);
    targets_.resize(BT * A);
    for (int a = 0; a < A; a++)
      corpus_.sample_train(rng, B, T, ids_.data() + a * BT, targets_.data() + a * BT);
    const std::vector<float> weights(BT, 1.0f);
    const double normalizer = double(BT) * A;  // every position is a target
    // Under MPI each rank runs its share of every micro-batch's rows.
    const auto [b0, b1] = dist::share(B);
    const int nb = int(b1 - b0), n = nb * T;
    dlogits_.resize(size_t(n) * V);
    KdLossResult total;
    for (int a = 0; a < A && nb > 0; a++) {
      const size_t at = a * BT + size_t(b0) * T;
      const int32_t* ids = ids_.data() + at;
      // Cross-entropy alone needs no teacher: it is not run (fine-tuning on text).
      const float* teacher_logits = spec_.needs_teacher() ? teacher_->forward(ids, nb, T) : nullptr;
      const float* student_logits = model.forward(ids, nb, T);
      std::fill(dlogits_.begin(), dlogits_.end(), 0.0f);
      add(total, kd_loss_dense(spec_, student_logits, teacher_logits, targets_.data() + at,
                               weights.data(), n, V, normalizer, dlogits_.data()));
      model.backward(dlogits_.data());
    }
    allreduce(total);
    return StepResult{total.loss, int64_t(BT) * A, terms(total)};
  }

  float evaluate(Model& model) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, V = model.config().vocab_size;
    const size_t BT = size_t(B) * T;
    std::vector<int32_t> ids(BT), targets(BT);
    const std::vector<float> weights(BT, 1.0f);
    const double normalizer = double(BT) * o_.loop.eval_batches;
    const auto [b0, b1] = dist::share(B);
    const int nb = int(b1 - b0);
    const size_t at = size_t(b0) * T;
    double loss = 0.0;
    for (int i = 0; i < o_.loop.eval_batches && nb > 0; i++) {
      corpus_.val_batch(i, o_.loop.eval_batches, B, T, ids.data(), targets.data());
      // The two models own separate buffers; cross-entropy alone needs no teacher.
      const float* t = spec_.needs_teacher() ? teacher_->forward(ids.data() + at, nb, T) : nullptr;
      const float* s = model.forward(ids.data() + at, nb, T);
      loss += kd_loss_dense(spec_, s, t, targets.data() + at, weights.data(), nb * T, V,
                            normalizer, nullptr).loss;
    }
    dist::allreduce_sum(&loss, 1);
    return float(loss);
  }

  nlohmann::json identity() const override {
    return {{"task", "distill-online"}, {"teacher", o_.teacher}, {"data", o_.data},
            {"loss", spec_.describe()}};
  }

 private:
  std::unique_ptr<Tokenizer> tokenizer_;  // null: bytes
  TextCorpus corpus_;
  std::vector<int32_t> ids_, targets_;
  std::vector<float> dlogits_;
};

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

void distill_train(const DistillTrainOptions& options, const ProgressFn& on_progress) {
  if (is_cross_tokenizer(options)) {
    run_training(options.loop, *make_cross_tokenizer_task(options), on_progress);
    return;
  }
  if (options.dataset.empty() == options.data.empty())
    throw Error("give either --dataset (offline: teacher log-probs) or --data with --teacher "
                "(online: the teacher scores the text as training goes)");
  if (!options.dataset.empty()) {
    OfflineDistillTask task(options);
    run_training(options.loop, task, on_progress);
  } else {
    OnlineDistillTask task(options);
    run_training(options.loop, task, on_progress);
  }
}

MemoryEstimate distill_train_memory_estimate(const DistillTrainOptions& options) {
  if (is_cross_tokenizer(options))
    return estimate_training_memory(options.loop, *make_cross_tokenizer_task(options));
  if (options.dataset.empty() == options.data.empty())
    throw Error("give either --dataset (offline: teacher log-probs) or --data with --teacher "
                "(online: the teacher scores the text as training goes)");
  if (!options.dataset.empty()) {
    OfflineDistillTask task(options);
    return estimate_training_memory(options.loop, task);
  }
  OnlineDistillTask task(options);
  return estimate_training_memory(options.loop, task);
}

}  // namespace distill
