// The training memory estimate (train/memory_estimate.h): its activation figure is what the
// architectures allocate, with and without checkpointing; its parts add up to the peak; online
// distillation's teacher is counted as it runs; and `--dry-run` prints the estimate without
// training or creating the run directory.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/arena.h"
#include "formats/model_dir.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/distill_train.h"
#include "train/memory_estimate.h"
#include "train/train_loop.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

ModelConfig qwen3_odd() {
  ModelConfig c = model_preset("llama-tiny");
  c.model_type = "qwen3";
  c.qk_norm = true;
  c.vocab_size = 301;
  c.hidden_size = 40;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 12;
  c.intermediate_size = 72;
  c.num_layers = 3;
  return c;
}

TEST(MemoryEstimate, ActivationFloatsAreWhatTheModelAllocates) {
  ModelConfig qwen2 = model_preset("llama-tiny");
  qwen2.model_type = "qwen2";
  qwen2.qkv_bias = true;
  qwen2.tie_word_embeddings = false;
  const struct {
    ModelConfig config;
    int B, T;
  } cases[] = {{model_preset("gpt2-tiny"), 2, 17},
               {model_preset("llama-tiny"), 3, 8},
               {qwen2, 1, 33},
               {qwen3_odd(), 2, 5}};
  for (const auto& c : cases) {
    for (bool checkpointing : {false, true})
      for (bool bf16 : {false, true}) {
        SCOPED_TRACE(c.config.model_type + (checkpointing ? " checkpointed" : "") +
                     (bf16 ? " bf16" : ""));
        Model m(c.config);
        m.set_checkpointing(checkpointing);
        m.set_precision(bf16 ? MatmulPrecision::BF16 : MatmulPrecision::F32);
        EXPECT_EQ(m.activation_floats(), 0u);
        const std::vector<int32_t> ids(size_t(c.B) * c.T, 1);
        m.forward(ids.data(), c.B, c.T);
        EXPECT_EQ(training_buffer_floats(c.config, c.B, c.T, checkpointing, bf16),
                  m.activation_floats());
      }
    // At BF16 the MLP activation's f32 gradient buffer is not allocated (its gradient goes to
    // the bf16 copy): N x F floats for GELU, N x 2F for SwiGLU's gate and up.
    const size_t N = size_t(c.B) * c.T, F = size_t(c.config.intermediate_size);
    const size_t mlp_grad = c.config.arch == Arch::Gpt2 ? N * F : 2 * N * F;
    EXPECT_GE(training_buffer_floats(c.config, c.B, c.T, false) -
                  training_buffer_floats(c.config, c.B, c.T, false, true),
              mlp_grad);
    // Checkpointing keeps one layer's activations where it kept L: it saves L-1 of them.
    const size_t full = training_buffer_floats(c.config, c.B, c.T, false);
    const size_t ckpt = training_buffer_floats(c.config, c.B, c.T, true);
    const size_t one_layer = (full - ckpt) / size_t(c.config.num_layers - 1);
    EXPECT_EQ(full - ckpt, one_layer * size_t(c.config.num_layers - 1));
    EXPECT_GT(one_layer, 4 * size_t(c.B) * c.T * c.config.hidden_size);
  }
}

// A task with a fixed config and a declared teacher, for the estimate's arithmetic.
class FixedTask final : public TrainTask {
 public:
  explicit FixedTask(ModelConfig c) : c_(std::move(c)) {}
  ModelConfig model_config() override { return c_; }
  void init_model(Model&, uint64_t) override {}
  StepResult step(Model&, Rng&) override { return {}; }
  float evaluate(Model&) override { return 0.0f; }
  nlohmann::json identity() const override { return {}; }
  TaskMemory memory() const override { return TaskMemory{1000, 2000, 3000, 4000}; }

 private:
  ModelConfig c_;
};

TEST(MemoryEstimate, PartsAddUpToThePeak) {
  const ModelConfig c = model_preset("llama-bench");
  FixedTask task(c);
  TrainLoopOptions o;
  o.out = (test_support::temp_dir("memory-estimate") / "never").string();
  o.batch_size = 4;
  o.seq_len = 64;
  for (bool checkpointing : {false, true}) {
    o.checkpoint_activations = checkpointing;
    const MemoryEstimate e = estimate_training_memory(o, task);
    const int64_t P = c.num_parameters();
    EXPECT_EQ(e.num_params, P);
    EXPECT_EQ(e.params, int64_t(FloatBuffer::allocation_bytes(P)));
    EXPECT_EQ(e.optimizer, 2 * e.params);
    EXPECT_EQ(e.activations + e.logits,
              int64_t(FloatBuffer::allocation_bytes(
                  training_buffer_floats(c, o.batch_size, o.seq_len, checkpointing))));
    EXPECT_EQ(e.logits, int64_t(sizeof(float)) * o.batch_size * o.seq_len * c.vocab_size);
    EXPECT_EQ(checkpointing, e.activations < e.activations_other);
    EXPECT_EQ(e.peak(), e.baseline + e.params + e.grads + e.optimizer + e.activations +
                            e.logits + 1000 + 2000 + 3000 + 4000 + e.scratch);
    EXPECT_EQ(e.lines().back().find("  peak"), 0u);
  }
  EXPECT_FALSE(fs::exists(o.out));
}

TEST(MemoryEstimate, DryRunPrintsTheEstimateAndWritesNothing) {
  const fs::path dir = test_support::temp_dir("memory-dry-run");
  std::ofstream(dir / "corpus.txt") << std::string(5000, 'a');
  const test_support::CliRun r =
      test_support::run_cli("pretrain " + (dir / "corpus.txt").string() +
                                " --preset gpt2-tiny --seq-len 32 --batch-size 2 --dry-run "
                                "--checkpoint-activations --out " + (dir / "run").string(),
                            dir);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("activations"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpointing on"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  peak"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "run"));
}

TEST(MemoryEstimate, OnlineDistillationCountsTheTeacherAsItRuns) {
  const fs::path dir = test_support::temp_dir("memory-teacher");
  std::ofstream(dir / "corpus.txt") << std::string(5000, 'b');
  const ModelConfig teacher_config = model_preset("gpt2-tiny");
  {
    Model teacher(teacher_config);
    teacher.init_weights(1);
    save_model_dir(teacher, (dir / "teacher").string());
  }
  DistillTrainOptions o;
  o.teacher = (dir / "teacher").string();
  o.data = {(dir / "corpus.txt").string()};
  o.student_preset = "demo-student";
  o.loop.out = (dir / "run").string();
  o.loop.batch_size = 3;
  o.loop.seq_len = 20;
  const MemoryEstimate e = distill_train_memory_estimate(o);
  EXPECT_EQ(e.task.teacher_weights, model_arena_bytes(teacher_config, false));
  // The teacher forwards checkpointed (it never runs backward): what such a forward allocates.
  std::unique_ptr<Model> teacher = load_model_dir(o.teacher);
  teacher->set_checkpointing(true);
  const std::vector<int32_t> ids(size_t(o.loop.batch_size) * o.loop.seq_len, 7);
  teacher->forward(ids.data(), o.loop.batch_size, o.loop.seq_len);
  EXPECT_EQ(e.task.teacher_activations,
            int64_t(FloatBuffer::allocation_bytes(teacher->activation_floats())));
  EXPECT_EQ(e.task.dlogits, int64_t(sizeof(float)) * 3 * 20 * 256);
  EXPECT_GE(e.task.data, int64_t(sizeof(int32_t)) * 5000);
  EXPECT_EQ(e.num_params, model_preset("demo-student").num_parameters());
  EXPECT_FALSE(fs::exists(o.loop.out));
}

}  // namespace
}  // namespace distill
