#include "train/pretrain.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "data/text_corpus.h"
#include "formats/model_dir.h"
#include "model/model.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "train/checkpoint.h"
#include "train/lm_step.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace distill {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// The options that must not change across a resume, or the run would not be the same run.
nlohmann::json identity(const PretrainOptions& o) {
  return {{"seq_len", o.seq_len}, {"batch_size", o.batch_size}, {"grad_accum", o.grad_accum},
          {"seed", o.seed},       {"precision", o.precision},   {"data", o.data},
          {"val_fraction", o.val_fraction}};
}

// metrics.jsonl keeps one JSON object per line. On resume, lines past the checkpoint's step
// (written by the interrupted run after its last checkpoint) are dropped, so the file reads as
// one uninterrupted run.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;  // a line cut short by the kill
    if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept.data(), kept.size());
}

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : f_(std::fopen(path.c_str(), "a")), path_(path) {
    if (!f_) throw Error("{}: cannot open for appending: {}", path, std::strerror(errno));
  }
  ~MetricsLog() { std::fclose(f_); }
  void write(const nlohmann::json& j) {
    const std::string line = j.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
      throw Error("{}: write failed: {}", path_, std::strerror(errno));
  }

 private:
  std::FILE* f_;
  std::string path_;
};

}  // namespace

void pretrain(const PretrainOptions& o,
              const std::function<void(const PretrainProgress&)>& on_progress) {
  if (o.seq_len <= 0 || o.batch_size <= 0 || o.grad_accum <= 0 || o.steps <= 0)
    throw Error("seq-len, batch-size, grad-accum and steps must be positive");
  MatmulPrecision precision;
  if (o.precision == "f32") precision = MatmulPrecision::F32;
  else if (o.precision == "bf16") precision = MatmulPrecision::BF16;
  else throw Error("unknown precision '{}' (expected f32 or bf16)", o.precision);
  LrSchedule schedule;
  schedule.kind = LrSchedule::parse_kind(o.schedule);
  schedule.max_lr = o.lr;
  schedule.min_lr = o.min_lr;
  schedule.warmup_steps = o.warmup;
  schedule.total_steps = o.steps;
  schedule.decay_fraction = o.decay_fraction;

  const TextCorpus corpus = TextCorpus::load(o.data, o.val_fraction, o.seq_len + 1);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw Error("{}: cannot create run directory: {}", o.out, ec.message());

  const std::optional<std::string> ckpt = latest_checkpoint(o.out);
  if (ckpt && !o.resume)
    throw Error("{}: run directory already has checkpoints ({}); pass --resume to continue it "
                "or choose another --out", o.out, fs::path(*ckpt).filename().string());
  ModelConfig config = ckpt ? ModelConfig::from_file(*ckpt + "/config.json")
                            : (o.config.empty() ? model_preset(o.preset)
                                                : ModelConfig::from_file(o.config));
  if (config.vocab_size < ByteTokenizer::kVocabSize)
    throw Error("model vocabulary ({}) is smaller than the byte tokenizer's {}",
                config.vocab_size, ByteTokenizer::kVocabSize);
  if (config.arch == Arch::Gpt2 && o.seq_len > config.max_position)
    throw Error("seq-len {} exceeds the model's n_positions {}", o.seq_len, config.max_position);

  Model model(config);
  model.set_precision(precision);
  AdamWOptions adam{o.beta1, o.beta2, o.eps, o.weight_decay};
  AdamW optimizer(model, adam);
  TrainerState state;
  Rng data_rng(o.seed ^ 0x5eedda7aull);
  const std::string metrics_path = o.out + "/metrics.jsonl";
  if (ckpt) {
    load_checkpoint(*ckpt, model, optimizer, state);
    if (state.extra.contains("identity") && state.extra["identity"] != identity(o))
      throw Error("{}: cannot resume with different options: checkpoint has {}, now {}", *ckpt,
                  state.extra["identity"].dump(), identity(o).dump());
    data_rng.set_words(state.rng);
    truncate_metrics(metrics_path, state.step);
    PretrainProgress p;
    p.kind = PretrainProgress::Kind::Resumed;
    p.step = state.step;
    p.total_steps = o.steps;
    p.path = *ckpt;
    on_progress(p);
  } else {
    model.init_weights(o.seed);
    std::remove(metrics_path.c_str());
  }
  state.extra = {{"identity", identity(o)}, {"preset", o.config.empty() ? o.preset : o.config}};
  MetricsLog metrics(metrics_path);

  const int B = o.batch_size, T = o.seq_len;
  const size_t BT = size_t(B) * T;
  std::vector<int32_t> ids(BT * o.grad_accum), targets(BT * o.grad_accum);
  std::vector<int32_t> vids(BT), vtargets(BT);

  auto evaluate = [&]() -> float {
    LossSum total;
    for (int i = 0; i < o.eval_batches; i++) {
      corpus.val_batch(i, o.eval_batches, B, T, vids.data(), vtargets.data());
      const LossSum l = lm_forward_loss(model, vids.data(), vtargets.data(), B, T);
      total.sum += l.sum;
      total.count += l.count;
    }
    return float(total.mean());
  };
  auto checkpoint = [&]() {
    std::copy(data_rng.words(), data_rng.words() + 4, state.rng);
    PretrainProgress p;
    p.kind = PretrainProgress::Kind::Checkpoint;
    p.step = state.step;
    p.total_steps = o.steps;
    p.path = save_checkpoint(o.out, model, optimizer, state, o.keep_checkpoints);
    on_progress(p);
  };

  const double elapsed_before = state.elapsed_s;
  const int64_t start_step = state.step;
  const auto t0 = Clock::now();
  float last_val = NAN;
  while (state.step < o.steps) {
    const auto ts = Clock::now();
    for (int a = 0; a < o.grad_accum; a++)
      corpus.sample_train(data_rng, B, T, ids.data() + a * BT, targets.data() + a * BT);
    const int64_t count = count_targets(targets.data(), targets.size());
    model.zero_grad();
    LossSum loss;
    for (int a = 0; a < o.grad_accum; a++) {
      const LossSum l = lm_forward_backward(model, ids.data() + a * BT, targets.data() + a * BT,
                                            B, T, 1.0f / float(count));
      loss.sum += l.sum;
      loss.count += l.count;
    }
    const float norm = clip_grad_norm(model.grads(), model.num_params(), o.grad_clip);
    const float lr = schedule.at(int(state.step));
    optimizer.step(model, lr);
    state.step++;
    state.tokens_seen += int64_t(BT) * o.grad_accum;
    const double step_s = std::chrono::duration<double>(Clock::now() - ts).count();
    const double run_s = std::chrono::duration<double>(Clock::now() - t0).count();
    state.elapsed_s = elapsed_before + run_s;

    PretrainProgress p;
    p.kind = PretrainProgress::Kind::Step;
    p.step = state.step;
    p.total_steps = o.steps;
    p.loss = float(loss.mean());
    p.lr = lr;
    p.grad_norm = norm;
    p.num_params = int64_t(model.num_params());
    p.tokens_per_s = double(BT) * o.grad_accum * double(state.step - start_step) / run_s;
    p.elapsed_s = state.elapsed_s;
    p.eta_s = run_s / double(state.step - start_step) * double(o.steps - state.step);
    metrics.write({{"step", state.step}, {"loss", p.loss}, {"lr", lr}, {"grad_norm", norm},
                   {"tokens_per_s", double(BT) * o.grad_accum / step_s},
                   {"tokens", state.tokens_seen}, {"time_s", state.elapsed_s}});
    const bool last = state.step == o.steps;
    if ((o.eval_every > 0 && state.step % o.eval_every == 0) || last) {
      last_val = evaluate();
      p.val_loss = last_val;
      metrics.write({{"step", state.step}, {"val_loss", last_val}});
    }
    on_progress(p);
    const bool stopping = o.stop_after > 0 && state.step - start_step >= o.stop_after;
    if ((o.save_every > 0 && state.step % o.save_every == 0) || last || stopping) checkpoint();
    if (stopping) return;
  }
  const std::string final_dir = o.out + "/model";
  SaveModelOptions save;
  save.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(model, final_dir, save);
  PretrainProgress p;
  p.kind = PretrainProgress::Kind::Done;
  p.step = state.step;
  p.total_steps = o.steps;
  p.val_loss = last_val;
  p.path = final_dir;
  on_progress(p);
}

}  // namespace distill
