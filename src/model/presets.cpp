#include "model/presets.h"

#include "core/error.h"

namespace distill {
namespace {

ModelConfig gpt2(int V, int C, int L, int H, int positions) {
  ModelConfig c;
  c.arch = Arch::Gpt2;
  c.model_type = "gpt2";
  c.vocab_size = V;
  c.hidden_size = C;
  c.num_layers = L;
  c.num_heads = c.num_kv_heads = H;
  c.head_dim = C / H;
  c.intermediate_size = 4 * C;
  c.max_position = positions;
  c.norm_eps = 1e-5f;
  c.tie_word_embeddings = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return c;
}

ModelConfig llama(int V, int C, int L, int H, int KV, int F, int positions) {
  ModelConfig c;
  c.arch = Arch::Llama;
  c.model_type = "llama";
  c.vocab_size = V;
  c.hidden_size = C;
  c.num_layers = L;
  c.num_heads = H;
  c.num_kv_heads = KV;
  c.head_dim = C / H;
  c.intermediate_size = F;
  c.max_position = positions;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_word_embeddings = true;
  return c;
}

ModelConfig untied(ModelConfig c) {
  c.tie_word_embeddings = false;
  return c;
}

struct Preset {
  const char* name;
  ModelConfig config;
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> all = {
      // Byte-level models for the demo and tests (vocabulary 256).
      {"gpt2-tiny", gpt2(256, 128, 4, 4, 256)},
      {"llama-tiny", llama(256, 128, 4, 4, 2, 352, 256)},
      {"gpt2-mini", gpt2(256, 256, 6, 8, 512)},
      // The demo's teacher (4.9M parameters) and a student of about 1/8 its size (0.57M).
      {"demo-teacher", gpt2(256, 256, 6, 8, 256)},
      {"demo-student", gpt2(256, 104, 4, 4, 256)},
      // The benchmark shapes of ../shared/PEERS.md (17-18M parameters, vocabulary 8192).
      {"gpt2-bench", gpt2(8192, 384, 6, 6, 256)},
      {"llama-bench", untied(llama(8192, 384, 6, 6, 2, 1024, 256))},
      // A benchmark model whose weights do not fit in cache (113M parameters, 453 MB in f32).
      {"llama-110m", untied(llama(8192, 768, 16, 12, 4, 2048, 512))},
  };
  return all;
}

}  // namespace

ModelConfig model_preset(const std::string& name) {
  for (const Preset& p : presets())
    if (name == p.name) return p.config;
  std::string known;
  for (const Preset& p : presets()) known += std::string(known.empty() ? "" : ", ") + p.name;
  throw Error("unknown model preset '{}' (known: {})", name, known);
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.push_back(p.name);
  return names;
}

}  // namespace distill
