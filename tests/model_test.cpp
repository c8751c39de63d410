// Model configs (HF config.json in and out), HF model directories (save/load, sharding, GPT-2's
// Conv1D layout, hub-style names), learning-rate schedules and the optimizer's decay rule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path temp_dir(const std::string& name) { return test_support::temp_dir("model-" + name); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, ReadsEveryFamilyAndRoundTrips) {
  for (const std::string& name : model_preset_names()) {
    const ModelConfig c = model_preset(name);
    const ModelConfig back = ModelConfig::from_json(c.to_json(), name);
    EXPECT_EQ(back.to_json(), c.to_json()) << name;
    EXPECT_EQ(Model(back).num_params(), size_t(c.num_parameters())) << name;
  }
  const json qwen2 = {{"model_type", "qwen2"}, {"vocab_size", 100}, {"hidden_size", 32},
                      {"intermediate_size", 64}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"tie_word_embeddings", true}};
  const ModelConfig q = ModelConfig::from_json(qwen2, "q");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  EXPECT_EQ(q.head_dim, 8);
  EXPECT_EQ(Model(q).num_params(), size_t(q.num_parameters()));
}

TEST(ModelConfig, ClearErrors) {
  EXPECT_EQ(error_of([] { ModelConfig::from_json({{"model_type", "bert"}}, "cfg.json"); }),
            "cfg.json: model_type 'bert' is not supported (supported: gpt2, llama, mistral, "
            "qwen2, qwen3)");
  EXPECT_EQ(error_of([] {
              ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 10}}, "c.json");
            }),
            "c.json: config field 'hidden_size' is required for model_type 'llama'");
  EXPECT_EQ(error_of([] {
              ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", "many"}}, "g");
            }),
            "g: config field 'vocab_size' must be a number, found \"many\"");
  json yarn = model_preset("llama-tiny").to_json();
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of([&] { ModelConfig::from_json(yarn, "y"); }).find("'yarn' is not supported"),
            std::string::npos);
  json gqa = model_preset("llama-tiny").to_json();
  gqa["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { ModelConfig::from_json(gqa, "k"); }).find("multiple of"),
            std::string::npos);
  const fs::path dir = temp_dir("cfg");
  std::ofstream(dir / "bad.json") << "{\"model_type\": ";
  EXPECT_NE(error_of([&] { ModelConfig::from_file((dir / "bad.json").string()); })
                .find("bad.json: config is not valid JSON"),
            std::string::npos);
}

void expect_same_params(Model& a, Model& b) {
  ASSERT_EQ(a.num_params(), b.num_params());
  EXPECT_EQ(0, std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)));
}

TEST(ModelDir, SaveLoadRoundTripBothArchitectures) {
  for (const char* preset : {"gpt2-tiny", "llama-tiny"}) {
    const fs::path dir = temp_dir(std::string("rt-") + preset);
    Model m(model_preset(preset));
    m.init_weights(5);
    save_model_dir(m, dir.string());
    auto back = load_model_dir(dir.string());
    expect_same_params(m, *back);
    // What transformers reads: config.json with model_type/architectures; F32 tensors with HF
    // names and HF shapes (GPT-2 Conv1D weights are (in, out)).
    const SafetensorsFile st = SafetensorsFile::open((dir / "model.safetensors").string());
    EXPECT_EQ(st.metadata().at("format"), "pt");
    for (const ParamSpec& s : m.param_specs()) {
      const TensorInfo& t = st.get(s.name);
      EXPECT_EQ(t.shape, s.hf_shape()) << s.name;
      EXPECT_EQ(t.dtype, DType::F32);
    }
    if (std::string(preset) == "gpt2-tiny") {
      const TensorInfo& fc = st.get("transformer.h.0.mlp.c_fc.weight");
      EXPECT_EQ(fc.shape, (std::vector<int64_t>{128, 512}));  // (in=C, out=4C)
      // HF element [i][o] is our element [o][i].
      const float* ours = m.param("transformer.h.0.mlp.c_fc.weight");
      const float* hf = reinterpret_cast<const float*>(fc.data);
      EXPECT_EQ(hf[3 * 512 + 7], ours[7 * 128 + 3]);
    }
  }
}

// A model directory loads for inference: no gradient arena (a teacher or a served model is
// 4 bytes per parameter lighter), the same logits as the trainable model, backward refused.
TEST(ModelDir, LoadsInferenceOnlyWithoutGradients) {
  for (const char* preset : {"gpt2-tiny", "llama-tiny"}) {
    const fs::path dir = temp_dir(std::string("inf-") + preset);
    Model m(model_preset(preset));
    m.init_weights(5);
    save_model_dir(m, dir.string());
    auto back = load_model_dir(dir.string());
    EXPECT_TRUE(m.trainable());
    EXPECT_FALSE(back->trainable());
    EXPECT_EQ(back->grads(), nullptr);
    EXPECT_EQ(back->grad(m.param_specs()[0].name), nullptr);
    back->zero_grad();  // a no-op
    const std::vector<int32_t> ids = {1, 5, 9, 200, 3, 7, 11, 2};
    const size_t V = size_t(m.config().vocab_size);
    std::vector<float> want(m.forward(ids.data(), 2, 4), m.forward(ids.data(), 2, 4) + 8 * V);
    const float* got = back->forward(ids.data(), 2, 4);
    EXPECT_EQ(0, std::memcmp(want.data(), got, want.size() * sizeof(float))) << preset;
    std::vector<float> dlogits(8 * V, 0.0f);
    EXPECT_NE(error_of([&] { back->backward(dlogits.data()); }).find("inference-only"),
              std::string::npos);
  }
}

TEST(ModelDir, ShardsAboveTheLimitAndLoadsHubStyleGpt2Names) {
  const fs::path dir = temp_dir("shard");
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(9);
  SaveModelOptions opt;
  opt.max_shard_bytes = 400 * 1024;  // ~3.4 MB of weights -> several shards
  save_model_dir(m, dir.string(), opt);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  expect_same_params(m, *load_model_dir(dir.string()));

  // The hub's gpt2 checkpoint has no "transformer." prefix and carries attn.bias buffers.
  const fs::path hub = temp_dir("hub");
  fs::copy_file(dir / "config.json", hub / "config.json");
  SafetensorsWriter w;
  std::vector<std::vector<float>> keep;
  for (const ParamSpec& s : m.param_specs()) {
    keep.push_back(to_hf_layout(s, m.params() + s.offset));
    w.add(s.name.substr(std::string("transformer.").size()), DType::F32, s.hf_shape(),
          keep.back().data(), keep.back().size() * 4);
  }
  std::vector<float> mask(16, 1.0f);
  w.add("h.0.attn.bias", DType::F32, {1, 1, 4, 4}, mask.data(), mask.size() * 4);
  w.write((hub / "model.safetensors").string());
  expect_same_params(m, *load_model_dir(hub.string()));
}

TEST(ModelDir, BadWeightsNameTheTensor) {
  const fs::path dir = temp_dir("bad");
  Model m(model_preset("llama-tiny"));
  save_model_dir(m, dir.string());
  // Same config, one layer more: the weights file lacks layer 4.
  json cfg = m.config().to_json();
  cfg["num_hidden_layers"] = 5;
  std::ofstream(dir / "config.json") << cfg.dump();
  EXPECT_NE(error_of([&] { load_model_dir(dir.string()); })
                .find("tensor 'model.layers.4.input_layernorm.weight' is missing"),
            std::string::npos);
  cfg["num_hidden_layers"] = 4;
  cfg["intermediate_size"] = 100;
  std::ofstream(dir / "config.json") << cfg.dump();
  EXPECT_NE(error_of([&] { load_model_dir(dir.string()); })
                .find("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [352, 128], "
                      "expected [100, 128]"),
            std::string::npos);
}

TEST(Schedule, WarmupCosineAndWsd) {
  LrSchedule s;
  s.max_lr = 1.0f;
  s.min_lr = 0.1f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_FLOAT_EQ(s.at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.at(9), 1.0f);
  EXPECT_FLOAT_EQ(s.at(10), 1.0f);
  EXPECT_NEAR(s.at(60), 0.55f + 0.45f * std::cos(M_PI * 50.0 / 99.0), 1e-6);
  EXPECT_FLOAT_EQ(s.at(109), 0.1f);
  s.kind = LrSchedule::Kind::Wsd;
  s.decay_fraction = 0.2f;  // decay over the last 22 steps
  EXPECT_FLOAT_EQ(s.at(50), 1.0f);
  EXPECT_FLOAT_EQ(s.at(87), 1.0f);
  EXPECT_NEAR(s.at(88), 1.0f - 0.9f / 22.0f, 1e-6);
  EXPECT_FLOAT_EQ(s.at(109), 0.1f);
  EXPECT_NE(error_of([] { LrSchedule::parse_kind("linear"); }).find("unknown"), std::string::npos);
}

TEST(Optimizer, DecayOnlyOnMatricesAndClipScalesToTheLimit) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(1);
  for (const ParamSpec& s : m.param_specs())
    EXPECT_EQ(s.decay, s.shape.size() == 2 && s.name != "model.embed_tokens.weight") << s.name;
  // With zero gradients, one step only applies decoupled weight decay: p *= 1 - lr * wd.
  std::vector<float> before(m.params(), m.params() + m.num_params());
  m.zero_grad();
  AdamW opt(m, AdamWOptions{0.9f, 0.95f, 1e-8f, 0.5f});
  opt.step(m, 0.1f);
  for (const ParamSpec& s : m.param_specs()) {
    const float factor = s.decay ? 0.95f : 1.0f;
    EXPECT_FLOAT_EQ(m.params()[s.offset], before[s.offset] * factor) << s.name;
  }
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_FLOAT_EQ(clip_grad_norm(g.data(), 2, 1.0f), 5.0f);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0f, 1e-6);
  g = {0.3f, 0.4f};
  clip_grad_norm(g.data(), 2, 1.0f);
  EXPECT_FLOAT_EQ(g[0], 0.3f);  // below the limit: untouched
  EXPECT_EQ(clip_scale(0.5f, 1.0f), 1.0f);
  EXPECT_EQ(clip_scale(5.0f, 0.0f), 1.0f);  // max_norm 0: no clipping
}

// The training loop clips by passing clip_scale to the optimizer: the parameters and moments
// after two steps are those of clipping the gradients first, bit for bit.
TEST(Optimizer, GradScaleEqualsClippingFirst) {
  Model a(model_preset("llama-tiny")), b(model_preset("llama-tiny"));
  a.init_weights(3);
  b.init_weights(3);
  AdamW oa(a, AdamWOptions{}), ob(b, AdamWOptions{});
  Rng rng(4);
  for (int step = 0; step < 2; step++) {
    for (size_t i = 0; i < a.num_params(); i++) a.grads()[i] = b.grads()[i] = float(rng.normal());
    const float norm = grad_norm(b.grads(), b.num_params());
    EXPECT_EQ(clip_grad_norm(a.grads(), a.num_params(), 1.0f), norm);
    ASSERT_GT(norm, 1.0f);  // the clip applies
    oa.step(a, 1e-3f);
    ob.step(b, 1e-3f, clip_scale(norm, 1.0f));
    EXPECT_EQ(0, std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(oa.v().data(), ob.v().data(), a.num_params() * sizeof(float)));
  }
}

}  // namespace
}  // namespace distill
