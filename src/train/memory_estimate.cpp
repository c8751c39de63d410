#include "train/memory_estimate.h"

#include <sys/resource.h>

#include <algorithm>
#include <fmt/format.h>

#include "core/arena.h"
#include "core/dist.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/train_loop.h"

namespace distill {
namespace {

// What the process holds besides the figures below: the binary and its shared libraries (oneDNN,
// ICU, SentencePiece, libstdc++...), the OpenMP team's stacks, oneDNN's JIT kernels and
// primitive caches, glibc's heap. Measured (docs/memory.md): peak RSS (/usr/bin/time -v) less
// every other figure of this estimate, over 11 pretraining runs from gpt2-tiny at 16 tokens to
// the Qwen2.5-0.5B shape: 22 MiB for the smallest (few oneDNN kernels yet), 37-43 MiB for the
// bench presets and the 0.5B shape. `distill --help` alone peaks at 18 MiB.
constexpr int64_t kProcessBaselineBytes = int64_t(40) << 20;

int64_t buffer_bytes(size_t floats) { return int64_t(FloatBuffer::allocation_bytes(floats)); }

}  // namespace

int64_t model_arena_bytes(const ModelConfig& config, bool trainable) {
  return (trainable ? 2 : 1) * buffer_bytes(size_t(config.num_parameters()));
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string format_bytes(int64_t bytes) {
  const double b = double(bytes);
  if (b >= double(1 << 30)) return fmt::format("{:.2f} GiB", b / double(1 << 30));
  if (b >= double(1 << 20)) return fmt::format("{:.1f} MiB", b / double(1 << 20));
  return fmt::format("{:.0f} KiB", b / 1024.0);
}

MemoryEstimate estimate_training_memory(const TrainLoopOptions& o, TrainTask& task) {
  MemoryEstimate e;
  // As run_training: the task's config (which checks the data), the checkpoint's on resume.
  e.config = task.model_config();
  const std::optional<std::string> ckpt = o.resume ? latest_checkpoint(o.out) : std::nullopt;
  if (ckpt) e.config = ModelConfig::from_file(*ckpt + "/config.json");
  const ModelConfig& c = e.config;
  // Under mpirun each rank holds the rows of its share of the batch (rank 0 the largest).
  const auto [b0, b1] = dist::share(o.batch_size);
  e.B = int(b1 - b0);
  e.ranks = dist::size();
  e.T = o.seq_len;
  e.checkpointing = o.checkpoint_activations;
  e.bf16 = o.precision == "bf16";
  const size_t P = size_t(c.num_parameters());
  e.num_params = int64_t(P);
  e.params = e.grads = buffer_bytes(P);
  e.optimizer = 2 * buffer_bytes(P);
  // The logits are the one (N,V) tensor of the architecture's plan.
  const size_t N = size_t(e.B) * e.T, V = size_t(c.vocab_size), C = size_t(c.hidden_size);
  const int64_t logits = int64_t((N * V + 15) / 16 * 16 * sizeof(float));
  const int64_t all = buffer_bytes(training_buffer_floats(c, e.B, e.T, e.checkpointing, e.bf16));
  const int64_t other =
      buffer_bytes(training_buffer_floats(c, e.B, e.T, !e.checkpointing, e.bf16));
  e.logits = logits;
  e.activations = all - logits;
  e.activations_other = other - logits;
  e.task = task.memory();

  // bf16 training keeps two packed bf16 copies of every weight matrix, refreshed per step
  // (Bf16Copies: the forward's and the backward's dinp layouts, counted as all parameters twice),
  // every layer's matmul inputs (Bf16Acts: one set per layer, or one shared set under
  // checkpointing, plus the LM head's input and the MLP activation's gradient); matmuls stage the
  // rest in thread_local vectors that only grow, the largest dlogits (N,V), and dweight's packed
  // input, at most (N,F) (kernels/matmul.cpp).
  if (e.bf16) {
    const size_t F = size_t(c.intermediate_size), Q = size_t(c.q_dim());
    const size_t sets = e.checkpointing ? 1 : size_t(c.num_layers);
    const size_t dmlp = N * (c.arch == Arch::Gpt2 ? F : 2 * F);
    const size_t acts = sets * N * (2 * C + Q + F) + N * C + dmlp;
    const size_t staging = std::max(N * V, N * 2 * F) + N * F;
    e.scratch += int64_t(sizeof(uint16_t) * (2 * P + acts + staging));
  }
  // Saving GPT-2 copies every Conv1D weight into HF's transposed layout before writing
  // (formats/model_dir.cpp), and one more of the tensor being converted.
  if (c.arch == Arch::Gpt2) {
    int64_t transposed = 0, largest = 0;
    for (const ParamSpec& s : gpt2_param_specs(c)) {
      if (!s.hf_transposed) continue;
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      transposed += n;
      largest = std::max(largest, n);
    }
    e.scratch += int64_t(sizeof(float)) * (transposed + largest);
  }
  // Per-position losses and their gradients (lm_step.cpp), per-thread norm partials.
  e.scratch += int64_t(sizeof(float)) * int64_t(2 * N + 64 * C);
  e.baseline = kProcessBaselineBytes;
  // A resume maps the checkpoint's weights and both moments while it copies them in, before
  // any activation exists.
  if (ckpt) e.resume_load = 3 * int64_t(P * sizeof(float));
  return e;
}

int64_t MemoryEstimate::peak() const {
  const int64_t arenas = baseline + params + grads + optimizer + task.teacher_weights + task.data;
  const int64_t training = arenas + activations + logits + task.teacher_activations +
                           task.dlogits + scratch;
  return std::max(training, arenas + resume_load);
}

std::vector<std::string> MemoryEstimate::lines() const {
  std::vector<std::string> out;
  auto line = [&](const char* what, int64_t bytes, const std::string& note) {
    out.push_back(fmt::format("  {:<22} {:>11}{}", what, format_bytes(bytes),
                              note.empty() ? "" : "  (" + note + ")"));
  };
  out.push_back(fmt::format("memory estimate: {} model, {} layers, {} parameters, batch {} x {} "
                            "tokens{}{}", config.model_type, config.num_layers, num_params, B, T,
                            bf16 ? ", bf16 matmuls" : "",
                            ranks > 1 ? fmt::format(", per rank of {} (mpirun)", ranks) : ""));
  line("parameters", params, "fp32");
  line("gradients", grads, "fp32");
  line("AdamW moments", optimizer, "2 x fp32");
  line("activations", activations,
       fmt::format("checkpointing {}; {} with it {}", checkpointing ? "on" : "off",
                   format_bytes(activations_other), checkpointing ? "off" : "on"));
  line("logits", logits, task.dlogits ? "(B,T,V)" : "(B,T,V), dlogits in place");
  if (task.dlogits) line("dlogits", task.dlogits, "(B,T,V)");
  if (task.teacher_weights) line("teacher weights", task.teacher_weights, "fp32, no gradients");
  if (task.teacher_activations)
    line("teacher activations", task.teacher_activations, "forward only, checkpointed");
  if (task.data) line("data", task.data, "tokens and batches");
  line("scratch", scratch, bf16 ? "bf16 staging, save copies" : "save copies, losses");
  line("process baseline", baseline, "code, libraries, threads; measured");
  if (resume_load) line("resume (transient)", resume_load, "checkpoint files mapped");
  line("peak", peak(), fmt::format("{} KiB", (peak() + 1023) / 1024));
  return out;
}

}  // namespace distill
