#include "train/distill_train.h"

#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "data/text_corpus.h"
#include "distill/losses.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"

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

// Online distillation on random windows of a text corpus: the frozen teacher's dense logits
// for every micro-batch.
class OnlineDistillTask final : public TrainTask {
 public:
  explicit OnlineDistillTask(const DistillTrainOptions& o)
      : o_(o),
        spec_(KdLossSpec::parse(o.loss, o.temperature,
                                o.tail == "ignore" ? TailRule::Ignore : TailRule::Bucket)),
        corpus_(TextCorpus::load(o.data, o.val_fraction, o.loop.seq_len + 1)) {
    if (o.teacher.empty()) throw Error("distillation needs --teacher (a model directory)");
    if (o.tail != "bucket" && o.tail != "ignore")
      throw Error("--tail '{}': expected bucket or ignore", o.tail);
    teacher_ = load_model_dir(o.teacher);
    teacher_fingerprint_ = model_tokenizer_fingerprint(o.teacher);
  }

  ModelConfig model_config() override {
    ModelConfig c;
    int sources = !o_.student_config.empty() + !o_.student_preset.empty() + !o_.init_from.empty() +
                  o_.init_from_teacher;
    if (sources != 1)
      throw Error("choose exactly one student: --student-config, --student-preset, --init-from "
                  "or --init-from-teacher");
    std::string student_fp = ByteTokenizer::kFingerprint;
    if (o_.init_from_teacher) {
      layers_ = parse_layer_list(o_.keep_layers, teacher_->config().num_layers);
      c = config_keeping_layers(teacher_->config(), layers_);
      student_fp = teacher_fingerprint_;
    } else if (!o_.init_from.empty()) {
      c = ModelConfig::from_file(o_.init_from + "/config.json");
      student_fp = model_tokenizer_fingerprint(o_.init_from);
    } else {
      c = o_.student_config.empty() ? model_preset(o_.student_preset)
                                    : ModelConfig::from_file(o_.student_config);
    }
    if (c.vocab_size != teacher_->config().vocab_size)
      throw Error("student vocabulary ({} tokens) differs from the teacher's ({}): teacher and "
                  "student must share a tokenizer", c.vocab_size, teacher_->config().vocab_size);
    if (!teacher_fingerprint_.empty() && !student_fp.empty() && student_fp != teacher_fingerprint_)
      throw Error("student tokenizer fingerprint {} differs from the teacher's {} ({}): teacher "
                  "and student must share a tokenizer", student_fp, teacher_fingerprint_,
                  o_.teacher);
    if (c.arch == Arch::Gpt2 && o_.loop.seq_len > c.max_position)
      throw Error("seq-len {} exceeds the student's n_positions {}", o_.loop.seq_len,
                  c.max_position);
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
    dlogits_.resize(BT * V);
    KdLossResult total;
    for (int a = 0; a < A; a++) {
      const int32_t* ids = ids_.data() + a * BT;
      const float* teacher_logits = teacher_->forward(ids, B, T);
      const float* student_logits = model.forward(ids, B, T);
      std::fill(dlogits_.begin(), dlogits_.end(), 0.0f);
      const KdLossResult r = kd_loss_dense(spec_, student_logits, teacher_logits,
                                           targets_.data() + a * BT, weights.data(), N, V,
                                           normalizer, dlogits_.data());
      model.backward(dlogits_.data());
      total.loss += r.loss;
      for (int k = 0; k < 8; k++) total.per_term[k] += r.per_term[k];
    }
    return StepResult{total.loss, int64_t(BT) * A, terms(total)};
  }

  float evaluate(Model& model) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, V = model.config().vocab_size;
    const size_t BT = size_t(B) * T;
    std::vector<int32_t> ids(BT), targets(BT);
    const std::vector<float> weights(BT, 1.0f);
    const double normalizer = double(BT) * o_.loop.eval_batches;
    double loss = 0.0;
    for (int i = 0; i < o_.loop.eval_batches; i++) {
      corpus_.val_batch(i, o_.loop.eval_batches, B, T, ids.data(), targets.data());
      const float* t = teacher_->forward(ids.data(), B, T);  // the two models own separate buffers
      const float* s = model.forward(ids.data(), B, T);
      loss += kd_loss_dense(spec_, s, t, targets.data(), weights.data(),
                            int(BT), V, normalizer, nullptr).loss;
    }
    return float(loss);
  }

  nlohmann::json identity() const override {
    return {{"task", "distill-online"}, {"teacher", o_.teacher}, {"data", o_.data},
            {"loss", spec_.describe()}};
  }

  std::map<std::string, std::string> model_metadata() const override {
    if (teacher_fingerprint_.empty()) return {};
    return {{"distill_tokenizer", teacher_fingerprint_}};
  }

 private:
  nlohmann::json terms(const KdLossResult& r) const {
    nlohmann::json j = nlohmann::json::object();
    for (const KdTerm& t : spec_.terms)
      j[std::string("loss_") + kd_loss_name(t.kind)] = r.per_term[int(t.kind)];
    return j;
  }

  const DistillTrainOptions& o_;
  KdLossSpec spec_;
  TextCorpus corpus_;
  std::unique_ptr<Model> teacher_;
  std::string teacher_fingerprint_;
  std::vector<int> layers_;
  std::vector<int32_t> ids_, targets_;
  std::vector<float> dlogits_;
};

}  // namespace

void distill_train(const DistillTrainOptions& options, const ProgressFn& on_progress) {
  if (!options.dataset.empty())
    throw Error("offline distillation from a dataset is not available yet: use --data with "
                "--teacher (online)");
  OnlineDistillTask task(options);
  run_training(options.loop, task, on_progress);
}

}  // namespace distill
