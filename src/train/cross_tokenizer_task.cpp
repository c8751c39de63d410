#include "train/cross_tokenizer_task.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/arena.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/file.h"
#include "distill/losses.h"
#include "distill/token_alignment.h"
#include "distill/uld.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"

namespace distill {
namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> load_student_tokenizer(const std::string& spec) {
  if (spec == "byte" || spec == "bytes") return std::make_unique<ByteLevelTokenizer>();
  if (fs::is_directory(spec) && model_tokenizer_files(spec).empty())
    return load_model_tokenizer(spec);
  return load_tokenizer(spec);
}

bool is_cross_tokenizer(const DistillTrainOptions& o) {
  if (o.student_tokenizer.empty()) return false;
  if (o.teacher.empty())
    throw Error("--student-tokenizer needs --teacher (cross-tokenizer distillation is online)");
  return load_student_tokenizer(o.student_tokenizer)->fingerprint() !=
         load_model_tokenizer(o.teacher)->fingerprint();
}

namespace {

// One text split (training or held out) in both tokenizations.
struct TwoTokenizations {
  TokenizedText student, teacher;
};

// The first token boundary at or after `byte` that both tokenizations share: (student token,
// teacher token) starting there. The text's end is shared, so the search stops.
std::pair<size_t, size_t> common_start(const TwoTokenizations& d, int64_t byte) {
  const auto& s = d.student.starts;
  const auto& t = d.teacher.starts;
  size_t i = std::lower_bound(s.begin(), s.end(), byte) - s.begin();
  size_t j = std::lower_bound(t.begin(), t.end(), s[i]) - t.begin();
  while (s[i] != t[j]) {
    if (s[i] < t[j]) i = std::lower_bound(s.begin() + i, s.end(), t[j]) - s.begin();
    else j = std::lower_bound(t.begin() + j, t.end(), s[i]) - t.begin();
  }
  return {i, j};
}

class CrossTokenizerTask final : public TrainTask {
 public:
  explicit CrossTokenizerTask(const DistillTrainOptions& o)
      : o_(o), spec_(CrossTokenizerLossSpec::parse(o.loss, o.temperature)) {
    if (!o.dataset.empty())
      throw Error("--student-tokenizer: cross-tokenizer distillation is online (--teacher with "
                  "--data); a --dataset holds the teacher's top-k in its own vocabulary");
    if (o.data.empty()) throw Error("--student-tokenizer needs --data (text files)");
    teacher_ = load_model_dir(o.teacher);
    // The teacher never runs backward: its forward need not keep every layer's activations.
    teacher_->set_checkpointing(true);
    teacher_tok_ = load_model_tokenizer(o.teacher);
    student_tok_ = load_student_tokenizer(o.student_tokenizer);
    const int Vt = teacher_->config().vocab_size;
    if (teacher_tok_->vocab_size() > Vt)
      throw Error("teacher {}: its tokenizer has {} tokens, more than its vocabulary of {}",
                  o.teacher, teacher_tok_->vocab_size(), Vt);
    student_bytes_ = vocabulary_bytes(*student_tok_);
    teacher_bytes_ = vocabulary_bytes(*teacher_tok_);
    teacher_bytes_.resize(size_t(Vt));  // padding ids: no bytes, never matched
    load_text();
    // The teacher's window covers the bytes of the student's T+1 tokens on average (with 10%
    // to spare) within its context: positions beyond it have no aligned pair.
    const double ratio = bytes_per_token(train_.student) / bytes_per_token(train_.teacher);
    teacher_T_ = std::clamp(int(std::ceil((o.loop.seq_len + 1) * ratio * 1.1)), 1,
                            teacher_->config().max_position);
  }

  ModelConfig model_config() override {
    const int sources = !o_.student_config.empty() + !o_.student_preset.empty() +
                        !o_.init_from.empty() + o_.init_from_teacher;
    if (o_.init_from_teacher)
      throw Error("--init-from-teacher keeps the teacher's vocabulary; with --student-tokenizer "
                  "choose --student-preset, --student-config or --init-from");
    if (sources != 1)
      throw Error("choose exactly one student: --student-config, --student-preset or "
                  "--init-from");
    ModelConfig c;
    const int V = student_tok_->vocab_size();
    if (!o_.init_from.empty()) {
      c = ModelConfig::from_file(o_.init_from + "/config.json");
      const std::string fp = model_tokenizer_fingerprint(o_.init_from);
      if (!fp.empty() && fp != student_tok_->fingerprint())
        throw Error("--init-from {}: its tokenizer fingerprint {} is not the student "
                    "tokenizer's {} ({})", o_.init_from, fp, student_tok_->fingerprint(),
                    o_.student_tokenizer);
    } else if (!o_.student_preset.empty()) {
      c = model_preset(o_.student_preset);
      c.vocab_size = V;  // a preset is a shape
    } else {
      c = ModelConfig::from_file(o_.student_config);
    }
    if (c.vocab_size < V)
      throw Error("student vocabulary ({} tokens) is smaller than the student tokenizer's {} ({})",
                  c.vocab_size, V, o_.student_tokenizer);
    if (c.arch == Arch::Gpt2 && o_.loop.seq_len > c.max_position)
      throw Error("seq-len {} exceeds the student's n_positions {}", o_.loop.seq_len,
                  c.max_position);
    return c;
  }

  void init_model(Model& model, uint64_t seed) override {
    if (!o_.init_from.empty()) load_weights(model, SafetensorsModel::open(o_.init_from));
    else model.init_weights(seed);
  }

  StepResult step(Model& model, Rng& rng) override {
    prepare(model);
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, A = o_.loop.grad_accum;
    batches_.resize(A);
    // The last start that leaves the student T+1 tokens.
    const int64_t last = train_.student.starts[train_.student.size() - size_t(T) - 1];
    for (int a = 0; a < A; a++) {
      std::vector<int64_t> bytes(B);
      for (int b = 0; b < B; b++) bytes[b] = int64_t(rng.below(uint64_t(last) + 1));
      build(batches_[a], train_, bytes);
    }
    const Sums s = run(model, batches_, true);
    nlohmann::json details = {{"loss_uld", s.uld}, {"loss_xkl", s.xkl}, {"loss_ce", s.ce},
                              {"aligned", s.aligned}};
    return StepResult{s.uld + s.xkl + s.ce, int64_t(B) * T * A, details};
  }

  float evaluate(Model& model) override {
    prepare(model);
    if (val_batches_.empty()) {
      // A fixed, evenly spaced set of held-out windows (the same at every evaluation).
      const int B = o_.loop.batch_size, T = o_.loop.seq_len, n = o_.loop.eval_batches;
      const int64_t last = val_.student.starts[val_.student.size() - size_t(T) - 1];
      const int64_t windows = int64_t(n) * B;
      val_batches_.resize(n);
      for (int i = 0; i < n; i++) {
        std::vector<int64_t> bytes(B);
        for (int b = 0; b < B; b++) {
          const int64_t w = int64_t(i) * B + b;
          bytes[b] = windows > 1 ? w * last / (windows - 1) : 0;
        }
        build(val_batches_[i], val_, bytes);
      }
    }
    const Sums s = run(model, val_batches_, false);
    return float(s.uld + s.xkl + s.ce);
  }

  nlohmann::json identity() const override {
    return {{"task", "distill-cross-tokenizer"}, {"teacher", o_.teacher}, {"data", o_.data},
            {"student_tokenizer", student_tok_->fingerprint()}, {"loss", spec_.describe()}};
  }

  std::map<std::string, std::string> model_metadata() const override {
    return {{"distill_tokenizer", student_tok_->fingerprint()}};
  }

  std::vector<std::string> model_files() const override {
    if (o_.student_tokenizer == "byte" || o_.student_tokenizer == "bytes") return {};
    return model_tokenizer_files(o_.student_tokenizer);
  }

  TaskMemory memory() const override {
    const ModelConfig& t = teacher_->config();
    const auto [b0, b1] = dist::share(o_.loop.batch_size);  // this rank's rows
    const int B = int(b1 - b0), T = o_.loop.seq_len, A = o_.loop.grad_accum;
    TaskMemory m;
    m.teacher_weights = model_arena_bytes(t, /*trainable=*/false);  // load_model_dir's
    if (spec_.needs_teacher())
      m.teacher_activations = int64_t(
          FloatBuffer::allocation_bytes(training_buffer_floats(t, B, teacher_T_, true)));
    m.dlogits = int64_t(sizeof(float) * size_t(B) * T * size_t(student_tok_->vocab_size()));
    const size_t tokens = train_.student.size() + train_.teacher.size() + val_.student.size() +
                          val_.teacher.size();
    const size_t global = size_t(o_.loop.batch_size) * A;  // every rank draws the whole batch
    m.data = int64_t((sizeof(int32_t) + sizeof(int64_t)) * tokens +
                     sizeof(int32_t) * global * (2 * T + teacher_T_));
    return m;
  }

 private:
  // One micro-batch: student ids/targets (B,T), teacher ids (B,Tt), each row's aligned pairs
  // (row-local positions).
  struct Batch {
    int B = 0;
    std::vector<int32_t> student_ids, targets, teacher_ids;
    std::vector<std::vector<AlignedRow>> pairs;
  };
  struct Sums {
    double uld = 0.0, xkl = 0.0, ce = 0.0, aligned = 0.0;
  };

  static double bytes_per_token(const TokenizedText& t) {
    return t.size() ? double(t.starts.back()) / double(t.size()) : 1.0;
  }

  // Reads every file and tokenizes its training part and held-out tail (the last val_fraction of
  // its bytes, moved to a UTF-8 boundary, as TextCorpus splits) with both tokenizers.
  void load_text() {
    if (!(o_.val_fraction > 0.0 && o_.val_fraction < 1.0))
      throw Error("--val-fraction {}: cross-tokenizer distillation needs a held-out part in "
                  "(0, 1)", o_.val_fraction);
    const int window = o_.loop.seq_len + 1;
    for (const std::string& path : o_.data) {
      const std::string text = read_file_text(path);
      size_t cut = text.size() - size_t(double(text.size()) * o_.val_fraction);
      while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) cut++;
      const std::string_view all(text);
      for (auto [part, split] : {std::pair{all.substr(0, cut), &train_},
                                 std::pair{all.substr(cut), &val_}}) {
        split->student.append(tokenize_with_offsets(
            *student_tok_, student_bytes_, part, "--student-tokenizer " + o_.student_tokenizer));
        split->teacher.append(tokenize_with_offsets(*teacher_tok_, teacher_bytes_, part,
                                                    "the teacher " + o_.teacher));
      }
    }
    for (auto [split, name] : {std::pair{&train_, "training"}, std::pair{&val_, "held-out"}})
      if (split->student.size() < size_t(window))
        throw Error("--data {}: the {} part has {} student tokens, fewer than one window of {}",
                    o_.data[0], name, split->student.size(), window);
  }

  // What depends on the model's vocabulary (it comes from the checkpoint on resume).
  void prepare(const Model& model) {
    if (student_V_ == model.config().vocab_size) return;
    student_V_ = model.config().vocab_size;
    std::vector<std::string> bytes = student_bytes_;
    bytes.resize(size_t(student_V_));
    if (spec_.xkl > 0.0) match_ = VocabularyMatch::exact(bytes, teacher_bytes_);
    ce_.terms = {KdTerm{KdLossKind::CE, float(spec_.ce), 0.5f}};
  }

  void build(Batch& batch, const TwoTokenizations& d, const std::vector<int64_t>& bytes) {
    const int T = o_.loop.seq_len, Tt = teacher_T_, B = int(bytes.size());
    const size_t ns = d.student.size(), nt = d.teacher.size();
    batch.B = B;
    batch.student_ids.resize(size_t(B) * T);
    batch.targets.resize(size_t(B) * T);
    batch.teacher_ids.assign(size_t(B) * Tt, 0);
    batch.pairs.assign(B, {});
    std::vector<int64_t> s_next(T), t_next(Tt);
    for (int b = 0; b < B; b++) {
      auto [s0, t0] = common_start(d, bytes[b]);
      if (s0 + T + 1 > ns) s0 = t0 = 0;  // the text's start is common to both
      for (int i = 0; i < T; i++) {
        batch.student_ids[size_t(b) * T + i] = d.student.ids[s0 + i];
        batch.targets[size_t(b) * T + i] = d.student.ids[s0 + i + 1];
        s_next[i] = d.student.starts[s0 + i + 1];
      }
      for (int j = 0; j < Tt; j++) {
        const bool has = t0 + j < nt, next = t0 + j + 1 < nt;
        if (has) batch.teacher_ids[size_t(b) * Tt + j] = d.teacher.ids[t0 + j];
        t_next[j] = next ? d.teacher.starts[t0 + j + 1] : -1;
      }
      batch.pairs[b] = align_by_next_token_start(s_next.data(), T, 0, t_next.data(), Tt, 0);
    }
  }

  // Forward (and backward) of every micro-batch; the KD terms are normalized by the aligned
  // pairs of all of them, ce by the student positions. Under MPI each rank runs its share of
  // every micro-batch's rows and the sums are reduced.
  Sums run(Model& model, std::vector<Batch>& batches, bool backward) {
    const int T = o_.loop.seq_len, Tt = teacher_T_, Vs = student_V_;
    const int Vt = teacher_->config().vocab_size;
    double pairs = 0.0, positions = 0.0;
    for (const Batch& b : batches) {
      for (const auto& p : b.pairs) pairs += double(p.size());
      positions += double(b.B) * T;
    }
    Sums s;
    std::vector<AlignedRow> rows;
    for (Batch& batch : batches) {
      const auto [b0, b1] = dist::share(batch.B);
      const int nb = int(b1 - b0), n = nb * T;
      if (nb <= 0) continue;
      rows.clear();
      for (int b = int(b0); b < int(b1); b++)
        for (AlignedRow r : batch.pairs[b])
          rows.push_back({int32_t((b - b0) * T + r.student), int32_t((b - b0) * Tt + r.teacher)});
      const float* t_logits = spec_.needs_teacher()
                                  ? teacher_->forward(batch.teacher_ids.data() + b0 * Tt, nb, Tt)
                                  : nullptr;
      const float* s_logits = model.forward(batch.student_ids.data() + b0 * T, nb, T);
      float* dl = nullptr;
      if (backward) {
        dlogits_.assign(size_t(n) * Vs, 0.0f);
        dl = dlogits_.data();
      }
      if (spec_.uld > 0.0 && pairs > 0)
        s.uld += uld_loss(s_logits, Vs, t_logits, Vt, rows, o_.temperature, spec_.uld / pairs, dl);
      if (spec_.xkl > 0.0 && pairs > 0)
        s.xkl += exact_match_kl_loss(s_logits, t_logits, match_, rows, o_.temperature,
                                     spec_.xkl / pairs, dl);
      if (spec_.ce > 0.0) {
        const std::vector<float> weights(size_t(n), 1.0f);
        s.ce += kd_loss_dense(ce_, s_logits, nullptr, batch.targets.data() + b0 * T,
                              weights.data(), n, Vs, positions, dl).loss;
      }
      if (backward) model.backward(dl);
    }
    double v[3] = {s.uld, s.xkl, s.ce};
    dist::allreduce_sum(v, 3);
    s.uld = v[0], s.xkl = v[1], s.ce = v[2];
    s.aligned = positions > 0 ? pairs / positions : 0.0;
    return s;
  }

  const DistillTrainOptions& o_;
  CrossTokenizerLossSpec spec_;
  std::unique_ptr<Model> teacher_;
  std::unique_ptr<Tokenizer> teacher_tok_, student_tok_;
  std::vector<std::string> student_bytes_, teacher_bytes_;
  TwoTokenizations train_, val_;
  int teacher_T_ = 0;
  int student_V_ = 0;
  VocabularyMatch match_;
  KdLossSpec ce_;
  std::vector<Batch> batches_, val_batches_;
  std::vector<float> dlogits_;
};

}  // namespace

std::unique_ptr<TrainTask> make_cross_tokenizer_task(const DistillTrainOptions& options) {
  return std::make_unique<CrossTokenizerTask>(options);
}

}  // namespace distill
