// Activation checkpointing (Model::set_checkpointing): the loss, the logits and every gradient
// are bit-identical to the path that keeps all activations, for both architectures and the
// llama family's variants (GQA, qkv bias, q/k norm, untied head, bf16 matmuls), at odd sizes and
// B > 1; pretraining with it reproduces the losses and final weights of a run without it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/rng.h"
#include "model/model.h"
#include "train/lm_step.h"
#include "train/pretrain.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

ModelConfig gpt2_odd() {
  ModelConfig c;
  c.arch = Arch::Gpt2;
  c.model_type = "gpt2";
  c.vocab_size = 67;
  c.hidden_size = 36;
  c.num_layers = 3;
  c.num_heads = c.num_kv_heads = 3;
  c.head_dim = 12;
  c.intermediate_size = 100;
  c.max_position = 32;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return c;
}

ModelConfig llama_family(const std::string& type, int C, int NH, int NKV, int HD, int F, int V) {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.model_type = type;
  c.vocab_size = V;
  c.hidden_size = C;
  c.num_layers = 3;
  c.num_heads = NH;
  c.num_kv_heads = NKV;
  c.head_dim = HD;
  c.intermediate_size = F;
  c.max_position = 64;
  c.norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  c.qkv_bias = type == "qwen2";
  c.qk_norm = type == "qwen3";
  return c;
}

struct Case {
  std::string name;
  ModelConfig config;
  int B, T;
  MatmulPrecision precision = MatmulPrecision::F32;
};

std::vector<Case> cases() {
  ModelConfig llama_gqa = llama_family("llama", 48, 6, 2, 8, 88, 71);
  llama_gqa.tie_word_embeddings = false;
  ModelConfig qwen2 = llama_family("qwen2", 40, 5, 1, 8, 72, 59);
  ModelConfig qwen3 = llama_family("qwen3", 40, 4, 2, 12, 64, 61);  // q_dim 48 != C
  ModelConfig biased = llama_family("llama", 32, 4, 4, 8, 56, 50);
  biased.o_bias = biased.mlp_bias = true;
  return {{"gpt2", gpt2_odd(), 2, 13},
          {"llama-gqa-untied", llama_gqa, 2, 11},
          {"qwen2-qkv-bias", qwen2, 3, 9},
          {"qwen3-qk-norm", qwen3, 2, 10},
          {"llama-o-mlp-bias", biased, 2, 7},
          {"llama-gqa-bf16", llama_gqa, 2, 11, MatmulPrecision::BF16},
          {"gpt2-bf16", gpt2_odd(), 3, 5, MatmulPrecision::BF16}};
}

// Weights drawn so that biases and norm gains are not their init's zeros and ones: every
// parameter takes part in the recomputed forward.
void random_weights(Model& m, uint64_t seed) {
  m.init_weights(seed);
  Rng rng(seed + 1);
  for (size_t i = 0; i < m.num_params(); i++) m.params()[i] += float(0.05 * rng.normal());
}

struct Pass {
  std::vector<float> logits;  // of the first batch
  std::vector<double> losses;
  std::vector<float> grads;
  size_t activation_floats = 0;
};

// Two batches' forward/backward, gradients accumulated, as a step with grad_accum 2 does.
Pass run(Model& m, const Case& c, bool checkpointing) {
  m.set_checkpointing(checkpointing);
  m.zero_grad();
  Pass p;
  const size_t N = size_t(c.B) * c.T;
  Rng rng(7);
  for (int batch = 0; batch < 2; batch++) {
    std::vector<int32_t> ids(N), targets(N);
    for (size_t i = 0; i < N; i++) {
      ids[i] = int32_t(rng.below(uint64_t(c.config.vocab_size)));
      targets[i] = i % 5 == 3 ? -1 : int32_t(rng.below(uint64_t(c.config.vocab_size)));
    }
    if (batch == 0) {
      const float* logits = m.forward(ids.data(), c.B, c.T);
      p.logits.assign(logits, logits + N * size_t(c.config.vocab_size));
    }
    p.losses.push_back(lm_forward_backward(m, ids.data(), targets.data(), c.B, c.T, 0.01f).sum);
  }
  p.grads.assign(m.grads(), m.grads() + m.num_params());
  p.activation_floats = m.activation_floats();
  return p;
}

// The first parameter whose gradient differs, by name, or "" when all are equal bit for bit.
std::string first_difference(const Model& m, const std::vector<float>& a,
                             const std::vector<float>& b) {
  for (const ParamSpec& s : m.param_specs())
    if (std::memcmp(a.data() + s.offset, b.data() + s.offset, s.numel * sizeof(float)) != 0)
      for (size_t i = 0; i < s.numel; i++)
        if (std::memcmp(&a[s.offset + i], &b[s.offset + i], sizeof(float)) != 0)
          return s.name + "[" + std::to_string(i) + "]: " + std::to_string(a[s.offset + i]) +
                 " vs " + std::to_string(b[s.offset + i]);
  return "";
}

TEST(ActivationCheckpointing, GradientsLossAndLogitsAreBitIdentical) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Model m(c.config);
    m.set_precision(c.precision);
    random_weights(m, 11);
    const Pass full = run(m, c, false);
    const Pass ckpt = run(m, c, true);
    const Pass again = run(m, c, false);  // and back: the buffers are re-planned each way
    EXPECT_EQ(full.losses, ckpt.losses);
    EXPECT_EQ(full.losses, again.losses);
    EXPECT_EQ(0, std::memcmp(full.logits.data(), ckpt.logits.data(),
                             full.logits.size() * sizeof(float)));
    EXPECT_EQ(first_difference(m, full.grads, ckpt.grads), "");
    EXPECT_EQ(first_difference(m, full.grads, again.grads), "");
    // Some gradient is not zero (the comparison is not of two empty arenas).
    double norm = 0.0;
    for (float g : ckpt.grads) norm += double(g) * g;
    EXPECT_GT(norm, 0.0);
    EXPECT_LT(ckpt.activation_floats, full.activation_floats);
  }
}

TEST(ActivationCheckpointing, OneLayerModelMatchesToo) {
  // With one layer there is nothing to recompute: the shared set holds the forward's.
  Case c{"gpt2-one-layer", gpt2_odd(), 2, 6};
  c.config.num_layers = 1;
  Model m(c.config);
  random_weights(m, 3);
  const Pass full = run(m, c, false);
  const Pass ckpt = run(m, c, true);
  EXPECT_EQ(full.losses, ckpt.losses);
  EXPECT_EQ(first_difference(m, full.grads, ckpt.grads), "");
}

// A BF16 model multiplies with bf16 copies of its weights made at each forward: after the
// weights change (as in an optimizer step) its loss, logits and gradients are those of a new
// model built with the changed weights, bit for bit, with and without checkpointing. A copy kept
// from the earlier forward would differ in every gradient.
TEST(ActivationCheckpointing, Bf16WeightCopiesFollowTheWeights) {
  for (const Case& c : cases()) {
    if (c.precision != MatmulPrecision::BF16) continue;
    SCOPED_TRACE(c.name);
    for (bool checkpointing : {false, true}) {
      Model m(c.config);
      m.set_precision(c.precision);
      random_weights(m, 11);
      const Pass before = run(m, c, checkpointing);
      Rng rng(19);
      for (size_t i = 0; i < m.num_params(); i++) m.params()[i] += float(0.02 * rng.normal());
      const Pass after = run(m, c, checkpointing);
      Model fresh(c.config);
      fresh.set_precision(c.precision);
      std::memcpy(fresh.params(), m.params(), m.num_params() * sizeof(float));
      const Pass expected = run(fresh, c, checkpointing);
      EXPECT_NE(before.losses, after.losses);
      EXPECT_EQ(after.losses, expected.losses);
      EXPECT_EQ(0, std::memcmp(after.logits.data(), expected.logits.data(),
                               after.logits.size() * sizeof(float)));
      EXPECT_EQ(first_difference(m, after.grads, expected.grads), "");
    }
  }
}

std::string write_corpus(const fs::path& dir) {
  Rng rng(5);
  const char* words[] = {"the ", "king ", "went ", "unto ", "a ", "city ", "and ", "saw ", ".\n"};
  std::string text;
  while (text.size() < 20000) text += words[rng.below(9)];
  const fs::path path = dir / "corpus.txt";
  std::ofstream(path) << text;
  return path.string();
}

std::vector<std::string> metric_losses(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].dump() + "@" + j["step"].dump());
    if (j.contains("val_loss"))
      out.push_back("val " + j["val_loss"].dump() + "@" + j["step"].dump());
  }
  return out;
}

TEST(ActivationCheckpointing, PretrainingGivesTheSameLossesAndWeights) {
  const fs::path dir = test_support::temp_dir("activation-checkpointing");
  const std::string corpus = write_corpus(dir);
  for (const std::string preset : {"gpt2-tiny", "llama-tiny"}) {
    SCOPED_TRACE(preset);
    auto options = [&](bool checkpointing) {
      PretrainOptions o;
      o.data = {corpus};
      o.preset = preset;
      o.loop.out = (dir / (preset + (checkpointing ? "-ckpt" : "-full"))).string();
      o.loop.seq_len = 24;
      o.loop.batch_size = 3;
      o.loop.grad_accum = 2;
      o.loop.steps = 4;
      o.loop.warmup = 1;
      o.loop.lr = 3e-3f;
      o.loop.eval_every = 2;
      o.loop.eval_batches = 1;
      o.loop.save_every = 0;
      o.loop.checkpoint_activations = checkpointing;
      return o;
    };
    const PretrainOptions full = options(false), ckpt = options(true);
    pretrain(full, [](const TrainProgress&) {});
    pretrain(ckpt, [](const TrainProgress&) {});
    const std::vector<std::string> losses = metric_losses(full.loop.out);
    EXPECT_EQ(losses.size(), 4u + 2u);
    EXPECT_EQ(losses, metric_losses(ckpt.loop.out));
    EXPECT_EQ(read_file_text(full.loop.out + "/model/model.safetensors"),
              read_file_text(ckpt.loop.out + "/model/model.safetensors"));
  }
}

}  // namespace
}  // namespace distill
