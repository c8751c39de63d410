// What online and offline distillation (train/distill_train.cpp, train/online_distill.cpp)
// share: the student's origin (config, preset, checkpoint or the teacher's layers), the KD loss
// spec, and the saved model's tokenizer metadata and files. Internal to src/train.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dist.h"
#include "core/error.h"
#include "distill/losses.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "train/distill_train.h"

namespace distill {

// What online and offline distillation share: the student's origin and the loss spec.
class DistillTaskBase : public TrainTask {
 public:
  explicit DistillTaskBase(const DistillTrainOptions& o)
      : o_(o),
        spec_(KdLossSpec::parse(o.loss, o.temperature,
                                o.tail == "ignore" ? TailRule::Ignore : TailRule::Bucket)) {
    if (o.tail != "bucket" && o.tail != "ignore")
      throw Error("--tail '{}': expected bucket or ignore", o.tail);
    if (!o.teacher.empty()) {
      teacher_ = load_model_dir(o.teacher);
      // f32 kept: --init-from-teacher and pruning read the teacher's f32 parameters.
      teacher_->set_weight_type(o.teacher_weights, /*keep_f32=*/true);
    }
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

// The online task (train/online_distill.cpp): a frozen teacher in process, or an endpoint.
std::unique_ptr<TrainTask> make_online_distill_task(const DistillTrainOptions& options);

}  // namespace distill
