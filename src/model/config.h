// The blueprint of a model, read from (and written as) a Hugging Face config.json.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "kernels/kernels.h"

namespace distill {

enum class Arch {
  Gpt2,   // LayerNorm, learned positions, GELU MLP, biases everywhere, tied head
  Llama,  // RMSNorm, RoPE, SwiGLU, GQA: llama, mistral, qwen2 (qkv bias), qwen3 (q/k norm)
};

struct ModelConfig {
  Arch arch = Arch::Gpt2;
  std::string model_type = "gpt2";  // HF model_type: gpt2, llama, mistral, qwen2, qwen3
  int vocab_size = 256;
  int hidden_size = 128;         // C
  int num_layers = 4;            // L
  int num_heads = 4;             // NH
  int num_kv_heads = 4;          // NKV (gpt2: = NH)
  int head_dim = 32;             // HD (qwen3 may set it apart from C/NH)
  int intermediate_size = 512;   // F: MLP hidden width
  int max_position = 256;        // gpt2 n_positions / llama max_position_embeddings
  float norm_eps = 1e-5f;        // layer_norm_epsilon / rms_norm_eps
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = true;
  bool qkv_bias = false;         // q/k/v projections have biases (gpt2, qwen2, attention_bias)
  bool o_bias = false;           // output projection has a bias (gpt2, llama attention_bias)
  bool mlp_bias = false;         // MLP projections have biases (gpt2, llama mlp_bias)
  bool qk_norm = false;          // per-head RMSNorm on q and k before RoPE (qwen3)
  int bos_token_id = -1;
  int eos_token_id = -1;

  // Reads a HF config.json object. `source` names the file in errors.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig from_file(const std::string& path);
  // The HF config.json that transformers loads unchanged.
  nlohmann::json to_json() const;
  // Checks the numbers fit together (heads divide, head_dim even for RoPE, ...).
  void validate(const std::string& source) const;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  int64_t num_parameters() const;
};

}  // namespace distill
