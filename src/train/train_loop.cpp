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

#include <fmt/format.h>

#include "core/dist.h"
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

void run_training(const TrainLoopOptions& o, TrainTask& task, const ProgressFn& progress) {
  // Under mpirun every rank runs this loop on the same data order; only rank 0 reports, writes
  // metrics and checkpoints (see core/dist.h).
  const bool root = dist::is_root();
  auto on_progress = [&](const TrainProgress& p) {
    if (root) progress(p);
  };
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
  std::optional<RunDirLock> lock;
  if (root) lock.emplace(o.out);
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
  model.set_checkpointing(o.checkpoint_activations);
  AdamW optimizer(model, AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay});
  TrainerState state;
  Rng data_rng(o.seed ^ 0x5eedda7aull);
  nlohmann::json identity = task.identity();
  identity["seq_len"] = o.seq_len;
  identity["batch_size"] = o.batch_size;
  identity["grad_accum"] = o.grad_accum;
  identity["seed"] = o.seed;
  identity["precision"] = o.precision;
  if (o.patience < 0) throw Error("patience must be >= 0 (0: no early stop), got {}", o.patience);
  if (o.patience > 0 && !o.keep_best)
    throw Error("patience needs keep-best (it stops when the held-out loss stops improving)");
  if (o.keep_best) {  // only then, so that older runs resume unchanged
    identity["keep_best"] = true;
    identity["patience"] = o.patience;
  }
  const std::string metrics_path = o.out + "/metrics.jsonl";
  // Early stopping's state, carried in every checkpoint: the best evaluation so far, how many
  // evaluations since, and whether patience ran out (a resumed run that stopped stays stopped).
  struct Best {
    int64_t step = -1;
    double val_loss = INFINITY;
    int evals_since = 0;
    bool stopped = false;
  } best;
  task.attach(model);
  if (ckpt) {
    load_checkpoint(*ckpt, model, optimizer, state);
    load_task_state(*ckpt, task.state_tensors());
    if (state.extra.contains("best")) {
      const nlohmann::json& b = state.extra["best"];
      best.step = b.at("step").get<int64_t>();
      best.val_loss = b.at("val_loss").get<double>();
      best.evals_since = b.at("evals_since").get<int>();
      best.stopped = b.at("stopped").get<bool>();
    }
    if (state.extra.contains("identity") && state.extra["identity"] != identity)
      throw Error("{}: cannot resume with different options: checkpoint has {}, now {}", *ckpt,
                  state.extra["identity"].dump(), identity.dump());
    data_rng.set_words(state.rng);
    if (root) truncate_metrics(metrics_path, state.step);
    TrainProgress p;
    p.kind = TrainProgress::Kind::Resumed;
    p.step = state.step;
    p.total_steps = o.steps;
    p.path = *ckpt;
    on_progress(p);
  } else {
    task.init_model(model, o.seed);
    if (root) std::remove(metrics_path.c_str());
  }
  // Every rank has loaded the checkpoint (or initialised) before rank 0 may write a new one.
  dist::barrier();
  state.extra = {{"identity", identity}};
  std::optional<MetricsLog> metrics;
  if (root) metrics.emplace(metrics_path);
  SaveModelOptions save;
  for (const auto& [k, v] : task.model_metadata()) save.metadata[k] = v;
  save.files = task.model_files();

  const std::string final_dir = o.out + "/model";
  auto model_metadata = [&](float val_loss, const char* selection) {
    SaveModelOptions s = save;
    s.metadata["distill.step"] = std::to_string(state.step);
    s.metadata["distill.total_steps"] = std::to_string(o.steps);
    if (!std::isnan(val_loss)) s.metadata["distill.val_loss"] = fmt::format("{:.6g}", val_loss);
    s.metadata["distill.selection"] = selection;
    return s;
  };
  const std::vector<std::pair<size_t, size_t>> shards = dist::shard_ranges(model.num_params());
  auto checkpoint = [&]() {
    // Under MPI each rank's moments are current on its shards only: gather them first.
    dist::allgather_shards(optimizer.m().data(), model.num_params());
    dist::allgather_shards(optimizer.v().data(), model.num_params());
    std::copy(data_rng.words(), data_rng.words() + 4, state.rng);
    if (o.keep_best)
      state.extra["best"] = {{"step", best.step}, {"val_loss", best.val_loss},
                             {"evals_since", best.evals_since}, {"stopped", best.stopped}};
    TrainProgress p;
    p.kind = TrainProgress::Kind::Checkpoint;
    p.step = state.step;
    p.total_steps = o.steps;
    if (root)
      p.path = save_checkpoint(o.out, model, optimizer, state, o.keep_checkpoints, save,
                               task.state_tensors());
    on_progress(p);
  };

  using Clock = std::chrono::steady_clock;
  const double elapsed_before = state.elapsed_s;
  const int64_t start_step = state.step;
  const auto t0 = Clock::now();
  int64_t run_tokens = 0;
  float last_val = NAN;
  while (state.step < o.steps && !best.stopped) {
    const auto ts = Clock::now();
    model.zero_grad();
    // Each rank accumulated the gradient of its share of the step's rows (already scaled by the
    // whole step's normalizer): their sum is the full step's gradient. Then every rank clips
    // and steps identically.
    const StepResult r = task.step(model, data_rng);
    const auto tw = Clock::now();
    dist::barrier();
    const auto tc = Clock::now();
    dist::allreduce_sum(model.grads(), model.num_params());
    const double comm_s = std::chrono::duration<double>(Clock::now() - tc).count();
    const double wait_s = std::chrono::duration<double>(tc - tw).count();
    // Clipping is applied as the optimizer reads the gradients (one pass less over them).
    const float norm = grad_norm(model.grads(), model.num_params());
    const float scale = clip_scale(norm, o.grad_clip);
    const float lr = schedule.at(int(state.step));
    if (dist::size() > 1) {
      // Each rank updates its shard of the parameters (half the update's memory traffic each
      // on 2 ranks), then the shards are all-gathered.
      optimizer.step(model, lr, shards, scale);
      dist::allgather_shards(model.params(), model.num_params());
    } else {
      optimizer.step(model, lr, scale);
    }
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
    if (dist::size() > 1) line["comm_s"] = comm_s, line["wait_s"] = wait_s;  // the gradient all-reduce's wall time
    if (metrics) metrics->write(line);
    bool last = state.step == o.steps;
    bool new_best = false;
    if ((o.eval_every > 0 && state.step % o.eval_every == 0) || last) {
      last_val = task.evaluate(model);
      p.val_loss = last_val;
      nlohmann::json eval_line = {{"step", state.step}, {"val_loss", last_val}};
      if (o.keep_best) {
        // Strictly lower: on a tie the earlier (cheaper-to-reach) weights are kept.
        new_best = double(last_val) < best.val_loss;
        if (new_best) {
          best.step = state.step;
          best.val_loss = last_val;
          best.evals_since = 0;
          eval_line["best"] = true;
        } else if (o.patience > 0 && ++best.evals_since >= o.patience) {
          best.stopped = true;
        }
      }
      if (metrics) metrics->write(eval_line);
    }
    on_progress(p);
    if (new_best) {
      if (root) save_model_dir(model, final_dir, model_metadata(last_val, "best held-out loss"));
      TrainProgress b;
      b.kind = TrainProgress::Kind::NewBest;
      b.step = b.best_step = state.step;
      b.total_steps = o.steps;
      b.val_loss = last_val;
      b.path = final_dir;
      on_progress(b);
    }
    if (best.stopped) {
      TrainProgress e;
      e.kind = TrainProgress::Kind::EarlyStop;
      e.step = state.step;
      e.total_steps = o.steps;
      e.best_step = best.step;
      e.val_loss = float(best.val_loss);
      on_progress(e);
      last = true;  // checkpoint, so that a resume knows it stopped
    }
    const bool stopping = o.stop_after > 0 && state.step - start_step >= o.stop_after;
    if ((o.save_every > 0 && state.step % o.save_every == 0) || last || stopping) checkpoint();
    if (stopping && !best.stopped) return;
  }
  TrainProgress p;
  p.kind = TrainProgress::Kind::Done;
  p.step = state.step;
  p.total_steps = o.steps;
  p.path = final_dir;
  if (o.keep_best) {
    // model/ was written at the best evaluation; a resumed run that had already finished finds
    // it there.
    if (root && !fs::exists(fs::path(final_dir) / "config.json"))
      throw Error("{}: the best model of this run is missing (keep-best writes it at each new "
                  "best held-out loss; was it deleted?)", final_dir);
    p.best_step = best.step;
    p.val_loss = float(best.val_loss);
  } else {
    if (root) save_model_dir(model, final_dir, model_metadata(last_val, "last"));
    p.val_loss = last_val;
  }
  on_progress(p);
}

}  // namespace distill
