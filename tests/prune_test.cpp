// distill prune (distill/prune.h): importance picks what contributes nothing, and removing it
// leaves the logits unchanged; slicing gives the shapes the architecture expects; the pruned
// directory works in eval, export and train; bad targets are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "distill/prune.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "test_support.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill {
namespace {

namespace fs = std::filesystem;
using test_support::error_of;
using test_support::run_cli;

ModelConfig gpt2_config() {
  ModelConfig c;  // arch gpt2
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.num_layers = 3;
  c.num_heads = c.num_kv_heads = 4;
  c.head_dim = 16;
  c.intermediate_size = 128;
  c.max_position = 64;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return c;
}

// Grouped-query attention (2 query heads per key/value head) with attention biases; or Qwen3's
// per-head q/k norms (shape (head_dim): untouched by head pruning).
ModelConfig llama_config(const std::string& type) {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.model_type = type;
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 96;
  c.max_position = 64;
  c.qkv_bias = c.o_bias = type == "llama";
  c.qk_norm = type == "qwen3";
  c.tie_word_embeddings = type != "llama";
  return c;
}

void save(const Model& m, const fs::path& dir) {
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, dir.string(), o);
}

// About 12 KB of varied English-like bytes.
std::string write_text(const fs::path& dir) {
  const char* words[] = {"the ", "king ", "said ", "unto ", "them, ", "and ", "it ", "was ",
                         "good. ", "light ", "over ", "waters\n", "of ", "day ", "night "};
  std::string text;
  uint64_t s = 7;
  while (text.size() < 12000) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(s >> 33) % 15];
  }
  const fs::path p = dir / "text.txt";
  std::ofstream(p) << text;
  return p.string();
}

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids, int B, int T) {
  const float* l = m.forward(ids.data(), B, T);
  return std::vector<float>(l, l + size_t(B) * T * m.config().vocab_size);
}

std::vector<int32_t> some_ids(int n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) ids[size_t(i)] = int32_t((i * 37 + 11) % 256);
  return ids;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

void zero_rows(Model& m, const std::string& name, int64_t row0, int64_t rows) {
  const ParamSpec* s = m.find_param(name);
  ASSERT_NE(s, nullptr) << name;
  const int64_t cols = s->shape.size() == 2 ? s->shape[1] : 1;
  std::memset(m.param(name) + row0 * cols, 0, sizeof(float) * size_t(rows * cols));
}

void zero_all(Model& m, const std::string& name) {
  const ParamSpec* s = m.find_param(name);
  ASSERT_NE(s, nullptr) << name;
  std::memset(m.param(name), 0, sizeof(float) * s->numel);
}

class PruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_support::temp_dir("prune");
    text_ = write_text(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  PruneOptions options(const fs::path& teacher, const std::string& out) {
    PruneOptions o;
    o.teacher = teacher.string();
    o.data = {text_};
    o.calib_tokens = 2048;
    o.seq_len = 32;
    o.out = (dir_ / out).string();
    return o;
  }

  fs::path dir_;
  std::string text_;
};

// MLP channels whose activation is zero on every input (up/c_fc rows and biases zero: the
// down projection's input is silu(g)*0 or gelu(0) = 0), different ones per layer.
std::vector<std::vector<int>> kill_mlp_channels(Model& m) {
  const ModelConfig& c = m.config();
  std::vector<std::vector<int>> live(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; l++) {
    for (int f = 0; f < c.intermediate_size; f++) {
      if ((f + l) % 4 != 0) {
        live[size_t(l)].push_back(f);
        continue;
      }
      const std::string p = (c.arch == Arch::Gpt2 ? "transformer.h." : "model.layers.") +
                            std::to_string(l) + ".mlp.";
      if (c.arch == Arch::Gpt2) {
        zero_rows(m, p + "c_fc.weight", f, 1);
        zero_rows(m, p + "c_fc.bias", f, 1);
      } else {
        zero_rows(m, p + "up_proj.weight", f, 1);
      }
    }
  }
  return live;
}

TEST_F(PruneTest, DeadMlpChannelsAndKvGroupsArePrunedExactly) {
  for (const std::string type : {"gpt2", "llama", "qwen3"}) {
    SCOPED_TRACE(type);
    const ModelConfig c = type == "gpt2" ? gpt2_config() : llama_config(type);
    Model m(c);
    m.init_weights(3);
    const std::vector<std::vector<int>> live = kill_mlp_channels(m);
    // llama: key/value group 1 (query heads 2, 3) outputs zero in every layer: v rows and bias
    // zero. Its o_proj columns stay random, so slicing the wrong columns would show.
    if (c.arch == Arch::Llama)
      for (int l = 0; l < c.num_layers; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
        zero_rows(m, p + "v_proj.weight", c.head_dim, c.head_dim);
        if (c.qkv_bias) zero_rows(m, p + "v_proj.bias", c.head_dim, c.head_dim);
      }
    save(m, dir_ / ("t-" + type));
    PruneOptions o = options(dir_ / ("t-" + type), "s-" + type);
    o.ffn = c.intermediate_size * 3 / 4;
    if (c.arch == Arch::Llama) o.heads = 2;
    const PruneResult r = prune(o);
    for (int l = 0; l < c.num_layers; l++) {
      EXPECT_EQ(r.plan.ffn[size_t(l)], live[size_t(l)]) << "layer " << l;
      if (c.arch == Arch::Llama) {
        EXPECT_EQ(r.plan.kv_heads[size_t(l)], std::vector<int>{0}) << "layer " << l;
        EXPECT_EQ(r.importance.heads[size_t(l)][2], 0.0);
        EXPECT_GT(r.importance.heads[size_t(l)][1], 0.0);
      }
    }
    std::unique_ptr<Model> s = load_model_dir(o.out);
    EXPECT_EQ(s->config().intermediate_size, c.intermediate_size * 3 / 4);
    EXPECT_EQ(s->config().num_heads, c.arch == Arch::Llama ? 2 : 4);
    EXPECT_EQ(s->config().num_kv_heads, c.arch == Arch::Llama ? 1 : 4);
    EXPECT_LT(s->config().num_parameters(), c.num_parameters());
    const std::vector<int32_t> ids = some_ids(2 * 24);
    const std::vector<float> want = logits_of(m, ids, 2, 24);
    EXPECT_LT(max_abs_diff(logits_of(*s, ids, 2, 24), want), 1e-5f);
  }
}

TEST_F(PruneTest, IdentityLayerHasZeroBlockInfluenceAndIsDropped) {
  for (const std::string type : {"gpt2", "llama"}) {
    SCOPED_TRACE(type);
    const ModelConfig c = type == "gpt2" ? gpt2_config() : llama_config(type);
    Model m(c);
    m.init_weights(5);
    // Layer 1 writes nothing into the residual stream: it is the identity.
    for (const ParamSpec& s : m.param_specs()) {
      const bool layer1 = s.name.find(".1.") != std::string::npos;
      for (const char* out : {"attn.c_proj.", "mlp.c_proj.", "o_proj.", "down_proj."})
        if (layer1 && s.name.find(out) != std::string::npos) zero_all(m, s.name);
    }
    save(m, dir_ / ("t-" + type));
    PruneOptions o = options(dir_ / ("t-" + type), "s-" + type);
    o.layers = 2;
    const PruneResult r = prune(o);
    EXPECT_NEAR(r.importance.block_influence[1], 0.0, 1e-9);
    EXPECT_GT(r.importance.block_influence[0], 1e-4);
    EXPECT_GT(r.importance.block_influence[2], 1e-4);
    EXPECT_EQ(r.plan.layers, (std::vector<int>{0, 2}));
    std::unique_ptr<Model> s = load_model_dir(o.out);
    EXPECT_EQ(s->config().num_layers, 2);
    const std::vector<int32_t> ids = some_ids(2 * 24);
    EXPECT_LT(max_abs_diff(logits_of(*s, ids, 2, 24), logits_of(m, ids, 2, 24)), 1e-5f);

    // --drop-layers names them instead.
    o.layers.reset();
    o.drop_layers = "0,2";
    o.out = (dir_ / ("d-" + type)).string();
    EXPECT_EQ(prune(o).plan.layers, std::vector<int>{1});
  }
}

// Every tensor of the pruned directory has the name and HF shape that the architecture's
// param_specs give for the new config (what transformers would load), and nothing else.
void expect_transformers_shaped(const std::string& dir) {
  const ModelConfig c = ModelConfig::from_file(dir + "/config.json");
  const std::vector<ParamSpec> specs =
      c.arch == Arch::Gpt2 ? gpt2_param_specs(c) : llama_param_specs(c);
  const SafetensorsModel w = SafetensorsModel::open(dir);
  EXPECT_EQ(w.tensors().size(), specs.size());
  for (const ParamSpec& s : specs) {
    const TensorInfo* t = w.find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->shape, s.hf_shape()) << s.name;
  }
  EXPECT_EQ(w.metadata().at("distill_tokenizer"), ByteTokenizer::kFingerprint);
}

TEST_F(PruneTest, EveryDimensionAtOnceGivesConsistentShapes) {
  for (const std::string type : {"gpt2", "llama", "qwen3"}) {
    SCOPED_TRACE(type);
    const ModelConfig c = type == "gpt2" ? gpt2_config() : llama_config(type);
    Model m(c);
    m.init_weights(9);
    save(m, dir_ / ("t-" + type));
    PruneOptions o = options(dir_ / ("t-" + type), "s-" + type);
    o.layers = 2;
    o.heads = 2;  // gpt2: implies hidden = 2 * head_dim
    o.ffn = 40;
    if (c.arch == Arch::Llama) o.hidden = 40;
    const PruneResult r = prune(o);
    const ModelConfig s = ModelConfig::from_file(o.out + "/config.json");
    EXPECT_EQ(s.num_layers, 2);
    EXPECT_EQ(s.num_heads, 2);
    EXPECT_EQ(s.num_kv_heads, c.arch == Arch::Llama ? 1 : 2);
    EXPECT_EQ(s.head_dim, 16);
    EXPECT_EQ(s.intermediate_size, 40);
    EXPECT_EQ(s.hidden_size, c.arch == Arch::Llama ? 40 : 32);
    EXPECT_EQ(s.tie_word_embeddings, c.tie_word_embeddings);
    EXPECT_EQ(r.student_params, s.num_parameters());
    expect_transformers_shaped(o.out);
    std::unique_ptr<Model> pruned = load_model_dir(o.out);
    const std::vector<float> logits = logits_of(*pruned, some_ids(32), 1, 32);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
    // prune.json records the scores and what was kept.
    const nlohmann::json j = nlohmann::json::parse(std::ifstream(o.out + "/prune.json"));
    EXPECT_EQ(j["calibration"]["tokens"], 2048);
    EXPECT_EQ(j["importance"]["block_influence"].size(), 3u);
    EXPECT_EQ(j["importance"]["heads"][0].size(), 4u);
    EXPECT_EQ(j["kept"]["hidden"].size(), size_t(s.hidden_size));
    EXPECT_EQ(j["student_params"], s.num_parameters());
  }
}

TEST_F(PruneTest, BadTargetsAreClearErrors) {
  const ModelConfig g = gpt2_config(), q = llama_config("llama");
  PruneOptions o = options(dir_ / "t", "s");
  auto check = [&](const ModelConfig& c, auto set) {
    PruneOptions x = o;
    set(x);
    return error_of([&] { check_prune_target(c, x); });
  };
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.heads = 8; }),
            "--heads 8: keep between 1 and the teacher's 4 attention heads per layer");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.heads = 3; }),
            "--heads 3: the teacher groups 2 query heads per key/value head (4 heads, 2 "
            "key/value heads) and whole groups are pruned, so --heads must be a multiple of 2");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.layers = 0; }),
            "--layers 0: keep between 1 and the teacher's 3 layers");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.data.clear(); }),
            "prune needs --data: calibration text files");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.drop_layers = "0,1,2"; }),
            "--drop-layers '0,1,2' drops all 3 layers of the teacher");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.drop_layers = "5"; }),
            "--drop-layers '5': expected increasing layer indices of the teacher (0..2), "
            "separated by commas");
  EXPECT_EQ(check(q, [](PruneOptions& x) { x.ffn = 97; }),
            "--ffn 97: keep between 1 and the teacher's 96 MLP channels");
  EXPECT_EQ(check(g,
                  [](PruneOptions& x) {
                    x.heads = 2;
                    x.hidden = 48;
                  }),
            "--heads 2 and --hidden 48: gpt2 attends at width n_embd, so --hidden must be "
            "heads * head_dim = 32");
  EXPECT_EQ(check(g, [](PruneOptions& x) { x.hidden = 40; }),
            "--hidden 40: gpt2 attends at width n_embd = heads * head_dim (16), so --hidden "
            "must be a multiple of 16");

  // The CLI reports them as errors before any work.
  Model m(q);
  m.init_weights(1);
  save(m, dir_ / "t");
  const std::string base = "prune --teacher " + (dir_ / "t").string() + " --out " +
                           (dir_ / "s").string();
  test_support::CliRun r = run_cli(base + " --layers 2", dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("error: prune needs --data"), std::string::npos) << r.err;
  r = run_cli(base + " --data " + text_ + " --layers 0", dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("error: --layers 0: keep between 1"), std::string::npos) << r.err;
  r = run_cli(base + " --data " + text_ + " --heads 3", dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("must be a multiple of 2"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "s" / "config.json"));
}

// Prune with the CLI, then the pruned directory in eval, export and as the student of `train`.
TEST_F(PruneTest, CliPrunedModelEvaluatesExportsAndDistills) {
  Model m(gpt2_config());
  m.init_weights(11);
  save(m, dir_ / "t");
  const std::string t = (dir_ / "t").string(), s = (dir_ / "s").string();
  test_support::CliRun r =
      run_cli("prune --teacher " + t + " --data " + text_ + " --calib-tokens 1024 --seq-len 32" +
                  " --layers 2 --heads 2 --ffn 64 --out " + s, dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("BI"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("shape: layers 3 -> 2, heads 4 -> 2 (kv 4 -> 2), mlp 128 -> 64, "
                       "hidden 64 -> 32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters: "), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(fs::path(s) / "prune.json"));

  r = run_cli("eval --teacher " + t + " --student " + s + " --text " + text_ +
                  " --out " + (dir_ / "report").string() + " --seq-len 32 --max-windows 4" +
                  " --speed-repeats 1 --speed-seconds 0 --speed-gen-tokens 4" +
                  " --speed-prompt-tokens 8", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "report" / "report.json"));

  r = run_cli("export --model " + s + " --format gguf --out " + (dir_ / "s.gguf").string(), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_GT(fs::file_size(dir_ / "s.gguf"), 0u);

  r = run_cli("train --init-from " + s + " --teacher " + t + " --data " + text_ +
                  " --loss kl --steps 3 --seq-len 32 --batch-size 2 --eval-every 3 --out " +
                  (dir_ / "run").string(), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(load_model_dir((dir_ / "run" / "model").string())->config().hidden_size, 32);
}

}  // namespace
}  // namespace distill
