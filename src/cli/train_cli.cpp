#include "cli/train_cli.h"

#include <fmt/format.h>

#include "core/dist.h"

namespace distill::cli {

void add_train_loop_options(CLI::App& app, TrainLoopOptions& o) {
  app.add_option("--out", o.out, "run directory (metrics.jsonl, checkpoints/, model/)");
  app.add_option("--seq-len", o.seq_len, "tokens per training window");
  app.add_option("--batch-size", o.batch_size, "windows per micro-batch");
  app.add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step");
  app.add_option("--steps", o.steps, "optimizer steps in total");
  app.add_option("--lr", o.lr, "peak learning rate");
  app.add_option("--min-lr", o.min_lr, "final learning rate (cosine, wsd)");
  app.add_option("--warmup", o.warmup, "linear warmup steps");
  app.add_option("--schedule", o.schedule, "learning-rate schedule: constant, cosine, wsd");
  app.add_option("--decay-fraction", o.decay_fraction, "wsd: fraction of steps spent decaying");
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices)");
  app.add_option("--beta1", o.beta1, "AdamW beta1");
  app.add_option("--beta2", o.beta2, "AdamW beta2");
  app.add_option("--adam-eps", o.eps, "AdamW epsilon");
  app.add_option("--grad-clip", o.grad_clip, "clip the global gradient norm (0: off)");
  app.add_option("--eval-every", o.eval_every, "steps between held-out evaluations");
  app.add_option("--eval-batches", o.eval_batches, "held-out batches per evaluation");
  app.add_option("--save-every", o.save_every, "steps between checkpoints");
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "newest checkpoints kept");
  app.add_option("--seed", o.seed, "seed for initialisation and data order");
  app.add_flag("--resume", o.resume, "continue from the run directory's latest checkpoint");
  app.add_option("--precision", o.precision, "matmul precision: f32 or bf16");
  app.add_option("--stop-after", o.stop_after,
                 "stop with a checkpoint after this many steps of this invocation (0: never)");
  app.add_flag("--keep-best", o.keep_best,
               "early stopping: model/ holds the weights of the evaluation (every --eval-every "
               "steps) with the lowest held-out loss, not the last step's");
  app.add_option("--patience", o.patience,
                 "with --keep-best: stop after this many evaluations without a new best "
                 "(0: train all --steps)");
  app.add_flag("--checkpoint-activations", o.checkpoint_activations,
               "keep only each layer's input in forward and recompute the layer in backward: "
               "activation memory O(layers x tokens x hidden) instead of every intermediate, for "
               "about a third more compute; same results bit for bit");
}

void add_dry_run_option(CLI::App& app, bool& dry_run) {
  app.add_flag("--dry-run", dry_run,
               "print the memory the run would need (parameters, gradients, optimizer, "
               "activations, teacher, peak) and exit without training or writing anything");
}

void print_memory_estimate(const MemoryEstimate& estimate) {
  if (!dist::is_root()) return;
  for (const std::string& line : estimate.lines()) std::printf("%s\n", line.c_str());
}

void TrainDisplay::operator()(const TrainProgress& p) {
  using K = TrainProgress::Kind;
  if (!bar_) bar_ = std::make_unique<ProgressBar>(long(p.total_steps));
  switch (p.kind) {
    case K::Resumed:
      bar_->print(fmt::format("resumed from {} at step {}", p.path, p.step));
      break;
    case K::Step:
      if (p.val_loss) {
        last_val_ = *p.val_loss;
        bar_->print(fmt::format("step {:>6}/{}  loss {:.4f}  held-out loss {:.4f}", p.step,
                                p.total_steps, p.loss, *p.val_loss));
      }
      bar_->update(long(p.step),
                   fmt::format("step {}/{}  loss {:.4f}  val {:.4f}  lr {:.2e}  |g| {:.2f}  {} "
                               "tok/s  ETA {}", p.step, p.total_steps, p.loss, last_val_, p.lr,
                               p.grad_norm, format_count(p.tokens_per_s),
                               format_duration(p.eta_s)));
      break;
    case K::Checkpoint:
      bar_->print(fmt::format("checkpoint: {}", p.path));
      break;
    case K::NewBest:
      bar_->print(fmt::format("new best held-out loss {:.4f} at step {}: {}", *p.val_loss,
                              p.step, p.path));
      break;
    case K::EarlyStop:
      bar_->print(fmt::format("early stop at step {}: no better held-out loss since step {} "
                              "({:.4f})", p.step, p.best_step, *p.val_loss));
      break;
    case K::Done:
      bar_->finish();
      if (p.best_step > 0)
        std::printf("model saved to %s: step %lld of %lld, the lowest held-out loss (%.4f); "
                    "peak RSS %s\n", p.path.c_str(), (long long)p.best_step, (long long)p.step,
                    p.val_loss ? double(*p.val_loss) : NAN,
                    format_bytes(peak_rss_bytes()).c_str());
      else
        std::printf("model saved to %s (held-out loss %.4f); peak RSS %s\n", p.path.c_str(),
                    p.val_loss ? double(*p.val_loss) : NAN,
                    format_bytes(peak_rss_bytes()).c_str());
      break;
  }
}

}  // namespace distill::cli
