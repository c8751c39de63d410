#include "train/train_loop.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "formats/model_dir.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace distill {

namespace {

class RunDirLock {
 public:
  explicit RunDirLock(const std::string& dir) {
    const std::string path = dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("{}: cannot open: {}", path, std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd_);
      throw Error("{}: run directory is in use by another distill process ({}); wait for it to "
                  "finish or choose another --out",
                  dir, err == EWOULDBLOCK ? ".lock is held" : std::strerror(err));
    }
  }
  ~RunDirLock() { ::close(fd_); }
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace
namespace fs = std::filesystem;

void run_training(const TrainLoopOptions& o, TrainTask& task, const ProgressFn& on_progress) {
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

  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw Error("{}: cannot create run directory: {}", o.out, ec.message());
  // One process per run directory: a second one would truncate the first one's metrics and
  // interleave checkpoints. The lock goes with the descriptor (a killed run releases it).
  const RunDirLock lock(o.out);
  const std::optional<std::string> ckpt = latest_checkpoint(o.out);
  if (ckpt && !o.resume)
    throw Error("{}: run directory already has checkpoints ({}); pass --resume to continue it "
                "or choose another --out", o.out, fs::path(*ckpt).filename().string());
  // The task's config is built on resume too: that is where it checks the data against the
  // model (vocabulary, tokenizer) and learns the metadata the saved model carries (a resumed
  // distill run once saved a student without its tokenizer fingerprint).
  const ModelConfig task_config = task.model_config();
  const ModelConfig config = ckpt ? ModelConfig::from_file(*ckpt + "/config.json") : task_config;
  Model model(config);
  model.set_precision(precision);
  AdamW optimizer(model, AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay});
  TrainerState state;
  Rng data_rng(o.seed ^ 0x5eedda7aull);
  nlohmann::json identity = task.identity();
  identity["seq_len"] = o.seq_len;
  identity["batch_size"] = o.batch_size;
  identity["grad_accum"] = o.grad_accum;
  identity["seed"] = o.seed;
  identity["precision"] = o.precision;
  const std::string metrics_path = o.out + "/metrics.jsonl";
  if (ckpt) {
    load_checkpoint(*ckpt, model, optimizer, state);
    if (state.extra.contains("identity") && state.extra["identity"] != identity)
      throw Error("{}: cannot resume with different options: checkpoint has {}, now {}", *ckpt,
                  state.extra["identity"].dump(), identity.dump());
    data_rng.set_words(state.rng);
    truncate_metrics(metrics_path, state.step);
    TrainProgress p;
    p.kind = TrainProgress::Kind::Resumed;
    p.step = state.step;
    p.total_steps = o.steps;
    p.path = *ckpt;
    on_progress(p);
  } else {
    task.init_model(model, o.seed);
    std::remove(metrics_path.c_str());
  }
  state.extra = {{"identity", identity}};
  MetricsLog metrics(metrics_path);
  SaveModelOptions save;
  for (const auto& [k, v] : task.model_metadata()) save.metadata[k] = v;
  save.files = task.model_files();

  auto checkpoint = [&]() {
    std::copy(data_rng.words(), data_rng.words() + 4, state.rng);
    TrainProgress p;
    p.kind = TrainProgress::Kind::Checkpoint;
    p.step = state.step;
    p.total_steps = o.steps;
    p.path = save_checkpoint(o.out, model, optimizer, state, o.keep_checkpoints, save);
    on_progress(p);
  };

  using Clock = std::chrono::steady_clock;
  const double elapsed_before = state.elapsed_s;
  const int64_t start_step = state.step;
  const auto t0 = Clock::now();
  int64_t run_tokens = 0;
  float last_val = NAN;
  while (state.step < o.steps) {
    const auto ts = Clock::now();
    model.zero_grad();
    const StepResult r = task.step(model, data_rng);
    const float norm = clip_grad_norm(model.grads(), model.num_params(), o.grad_clip);
    const float lr = schedule.at(int(state.step));
    optimizer.step(model, lr);
    state.step++;
    state.tokens_seen += r.tokens;
    run_tokens += r.tokens;
    const double step_s = std::chrono::duration<double>(Clock::now() - ts).count();
    const double run_s = std::chrono::duration<double>(Clock::now() - t0).count();
    state.elapsed_s = elapsed_before + run_s;

    TrainProgress p;
    p.kind = TrainProgress::Kind::Step;
    p.step = state.step;
    p.total_steps = o.steps;
    p.loss = float(r.loss);
    p.lr = lr;
    p.grad_norm = norm;
    p.details = r.details;
    p.num_params = int64_t(model.num_params());
    p.tokens_per_s = double(run_tokens) / run_s;
    p.elapsed_s = state.elapsed_s;
    p.eta_s = run_s / double(state.step - start_step) * double(o.steps - state.step);
    nlohmann::json line = {{"step", state.step}, {"loss", p.loss}, {"lr", lr},
                           {"grad_norm", norm}, {"tokens_per_s", double(r.tokens) / step_s},
                           {"tokens", state.tokens_seen}, {"time_s", state.elapsed_s}};
    if (r.details.is_object()) line.update(r.details);
    metrics.write(line);
    const bool last = state.step == o.steps;
    if ((o.eval_every > 0 && state.step % o.eval_every == 0) || last) {
      last_val = task.evaluate(model);
      p.val_loss = last_val;
      metrics.write({{"step", state.step}, {"val_loss", last_val}});
    }
    on_progress(p);
    const bool stopping = o.stop_after > 0 && state.step - start_step >= o.stop_after;
    if ((o.save_every > 0 && state.step % o.save_every == 0) || last || stopping) checkpoint();
    if (stopping) return;
  }
  const std::string final_dir = o.out + "/model";
  save_model_dir(model, final_dir, save);
  TrainProgress p;
  p.kind = TrainProgress::Kind::Done;
  p.step = state.step;
  p.total_steps = o.steps;
  p.val_loss = last_val;
  p.path = final_dir;
  on_progress(p);
}

}  // namespace distill
