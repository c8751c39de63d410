#include "formats/gguf_export.h"

#include <filesystem>

#include "core/error.h"

namespace distill {

namespace fs = std::filesystem;

namespace {

// llama.cpp's LLAMA_FTYPE for general.file_type.
uint32_t file_type_of(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return 0;   // ALL_F32
    case GgmlType::F16: return 1;   // MOSTLY_F16
    case GgmlType::Q8_0: return 7;  // MOSTLY_Q8_0
    case GgmlType::BF16: return 32; // MOSTLY_BF16
    default: throw Error("GGUF export supports f32, f16, bf16 and q8_0, not {}", ggml_type_name(type));
  }
}

// Our HF tensor-name suffix -> llama.cpp's, per architecture.
struct NameRule {
  const char* hf;
  const char* gguf;
};
const NameRule kGpt2Layer[] = {
    {"ln_1", "attn_norm"}, {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"},
    {"ln_2", "ffn_norm"},  {"mlp.c_fc", "ffn_up"},      {"mlp.c_proj", "ffn_down"},
};
const NameRule kLlamaLayer[] = {
    {"input_layernorm", "attn_norm"},     {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},       {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},  {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},  {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},        {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
};

}  // namespace

std::string gguf_arch_name(const ModelConfig& c) {
  const std::string& t = c.model_type;
  if (t == "gpt2") return "gpt2";
  if (t != "llama" && t != "mistral" && t != "qwen2" && t != "qwen3")
    throw Error("model_type '{}' has no GGUF export (supported: gpt2, llama, mistral, qwen2, qwen3)",
                t);
  const bool qwen = t == "qwen2" || t == "qwen3";
  if (qwen && (c.mlp_bias || c.o_bias))
    throw Error("llama.cpp's {} architecture has no {} bias; this model cannot be exported", t,
                c.mlp_bias ? "MLP" : "attention output");
  if (t == "qwen2" && c.head_dim * c.num_heads != c.hidden_size)
    throw Error("llama.cpp's qwen2 architecture needs head_dim * heads == hidden size ({} * {} != {})",
                c.head_dim, c.num_heads, c.hidden_size);
  if (qwen && c.rope_scaling.type == RopeScaling::Type::Llama3)
    throw Error("llama.cpp's {} architecture has no llama3 RoPE scaling (rope_freqs); this model "
                "cannot be exported", t);
  if (!qwen && c.qk_norm)
    throw Error("llama.cpp's llama architecture has no q/k norm; this model cannot be exported");
  return qwen ? t : "llama";
}

std::string gguf_tensor_name(const ModelConfig& c, const std::string& hf) {
  auto layer_name = [&](const std::string& prefix, const NameRule* rules, size_t n) -> std::string {
    // prefix<N>.<rule>.<weight|bias>
    const std::string rest = hf.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == std::string::npos) return "";
    const std::string layer = rest.substr(0, dot), tail = rest.substr(dot + 1);
    for (size_t i = 0; i < n; i++) {
      const std::string r = rules[i].hf;
      if (tail.size() > r.size() && tail.compare(0, r.size(), r) == 0 && tail[r.size()] == '.')
        return "blk." + layer + "." + rules[i].gguf + tail.substr(r.size());
    }
    return "";
  };
  std::string out;
  if (c.arch == Arch::Gpt2) {
    if (hf == "transformer.wte.weight") out = "token_embd.weight";
    else if (hf == "transformer.wpe.weight") out = "position_embd.weight";
    else if (hf == "transformer.ln_f.weight") out = "output_norm.weight";
    else if (hf == "transformer.ln_f.bias") out = "output_norm.bias";
    else if (hf == "lm_head.weight") out = "output.weight";
    else if (hf.rfind("transformer.h.", 0) == 0)
      out = layer_name("transformer.h.", kGpt2Layer, std::size(kGpt2Layer));
  } else {
    if (hf == "model.embed_tokens.weight") out = "token_embd.weight";
    else if (hf == "model.norm.weight") out = "output_norm.weight";
    else if (hf == "lm_head.weight") out = "output.weight";
    else if (hf.rfind("model.layers.", 0) == 0)
      out = layer_name("model.layers.", kLlamaLayer, std::size(kLlamaLayer));
  }
  if (out.empty()) throw Error("parameter '{}' has no GGUF tensor name", hf);
  return out;
}

int gguf_rope_permute_heads(const ModelConfig& c, const std::string& hf) {
  if (c.arch != Arch::Llama || (c.model_type != "llama" && c.model_type != "mistral")) return 0;
  auto has = [&](const char* s) { return hf.find(s) != std::string::npos; };
  if (has(".self_attn.q_proj.")) return c.num_heads;
  if (has(".self_attn.k_proj.")) return c.num_kv_heads;
  return 0;
}

void gguf_rope_permute(float* data, int64_t rows, int64_t cols, int heads, bool inverse) {
  DISTILL_CHECK(heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0);
  const int64_t hd = rows / heads, half = hd / 2;
  std::vector<float> tmp(size_t(hd * cols));
  for (int h = 0; h < heads; h++) {
    float* block = data + size_t(h) * hd * cols;
    for (int64_t i = 0; i < half; i++)
      for (int t = 0; t < 2; t++) {
        const int64_t hf_row = t * half + i, gguf_row = 2 * i + t;
        const int64_t from = inverse ? gguf_row : hf_row, to = inverse ? hf_row : gguf_row;
        std::copy(block + from * cols, block + (from + 1) * cols, tmp.data() + to * cols);
      }
    std::copy(tmp.begin(), tmp.end(), block);
  }
}

std::vector<float> gguf_llama3_rope_factors(const ModelConfig& c) {
  const int n = c.head_dim / 2;
  std::vector<float> base(n), scaled(n), factors(n);
  rope_inv_freq(base.data(), c.head_dim, c.rope_theta, RopeScaling{});
  rope_inv_freq(scaled.data(), c.head_dim, c.rope_theta, c.rope_scaling);
  for (int i = 0; i < n; i++) factors[i] = base[i] / scaled[i];
  return factors;
}

GgufVocab gguf_export_vocab(const Model& model, const std::string& model_dir,
                            const std::string& tokenizer) {
  const ModelConfig& c = model.config();
  GgufVocab vocab;
  if (tokenizer == "bytes") {
    vocab = gguf_vocab_bytes();
  } else if (!tokenizer.empty()) {
    vocab = gguf_vocab_from_file(tokenizer);
  } else if (!model_dir.empty() && (fs::exists(fs::path(model_dir) / "tokenizer.json") ||
                                    fs::exists(fs::path(model_dir) / "tokenizer.model"))) {
    vocab = gguf_vocab_from_file(model_dir);
  } else if (c.vocab_size == 256) {
    vocab = gguf_vocab_bytes();
  } else {
    throw Error("{}: no tokenizer.json or tokenizer.model, and vocab_size {} is not the byte-level "
                "256: pass --tokenizer", model_dir.empty() ? "model" : model_dir, c.vocab_size);
  }
  gguf_vocab_pad(vocab, c.vocab_size);
  auto in_vocab = [&](int id) { return id >= 0 && id < c.vocab_size; };
  if (vocab.bos < 0 && in_vocab(c.bos_token_id)) vocab.bos = c.bos_token_id;
  if (vocab.eos < 0 && in_vocab(c.eos_token_id)) vocab.eos = c.eos_token_id;
  return vocab;
}

GgufExportReport export_gguf(const Model& model, const GgufVocab& vocab, const std::string& path,
                             const GgufExportOptions& options) {
  const ModelConfig& c = model.config();
  GgufExportReport report;
  report.arch = gguf_arch_name(c);
  const std::string& a = report.arch;
  if (int(vocab.tokens.size()) != c.vocab_size)
    throw Error("vocabulary {} has {} tokens, the model {}: pad it first", vocab.source,
                vocab.tokens.size(), c.vocab_size);

  GgufWriter w;
  auto u32 = [](int64_t v) { return GgufValue::of_u32(uint32_t(v)); };
  w.set("general.architecture", GgufValue::of_string(a));
  w.set("general.name",
        GgufValue::of_string(options.name.empty() ? "distill " + c.model_type : options.name));
  w.set("general.file_type", u32(file_type_of(options.type)));
  w.set("general.quantization_version", u32(2));
  w.set(a + ".context_length", u32(c.max_position));
  w.set(a + ".embedding_length", u32(c.hidden_size));
  w.set(a + ".feed_forward_length", u32(c.intermediate_size));
  w.set(a + ".block_count", u32(c.num_layers));
  w.set(a + ".attention.head_count", u32(c.num_heads));
  if (c.arch == Arch::Gpt2) {
    w.set(a + ".attention.layer_norm_epsilon", GgufValue::of_f32(c.norm_eps));
  } else {
    w.set(a + ".vocab_size", u32(c.vocab_size));
    w.set(a + ".attention.head_count_kv", u32(c.num_kv_heads));
    w.set(a + ".attention.layer_norm_rms_epsilon", GgufValue::of_f32(c.norm_eps));
    w.set(a + ".rope.freq_base", GgufValue::of_f32(c.rope_theta));
    w.set(a + ".rope.dimension_count", u32(c.head_dim));
    if (c.head_dim * c.num_heads != c.hidden_size) {
      w.set(a + ".attention.key_length", u32(c.head_dim));
      w.set(a + ".attention.value_length", u32(c.head_dim));
    }
    if (c.rope_scaling.type == RopeScaling::Type::Linear) {
      w.set(a + ".rope.scaling.type", GgufValue::of_string("linear"));
      w.set(a + ".rope.scaling.factor", GgufValue::of_f32(c.rope_scaling.factor));
    }
  }
  gguf_vocab_write(w, vocab);

  if (c.rope_scaling.type == RopeScaling::Type::Llama3) {
    const std::vector<float> f = gguf_llama3_rope_factors(c);
    w.add_tensor("rope_freqs.weight", {int64_t(f.size())}, f.data(), GgmlType::F32);
    // Not read by llama.cpp for llama3 scaling (only YaRN uses it); lets import recover the
    // original parameters.
    w.set(a + ".rope.scaling.original_context_length", u32(c.rope_scaling.original_max_position));
    report.tensors++;
  }
  for (const ParamSpec& s : model.param_specs()) {
    const float* src = model.params() + s.offset;
    std::vector<float> permuted;
    if (const int heads = gguf_rope_permute_heads(c, s.name)) {
      permuted.assign(src, src + s.numel);
      const int64_t cols = s.shape.size() == 2 ? s.shape[1] : 1;
      gguf_rope_permute(permuted.data(), s.shape[0], cols, heads, false);
      src = permuted.data();
    }
    GgmlType type = s.shape.size() == 1 ? GgmlType::F32 : options.type;
    if (type == GgmlType::Q8_0 && s.shape.back() % 32 != 0) {
      type = GgmlType::F16;
      report.f16_fallbacks++;
    }
    w.add_tensor(gguf_tensor_name(c, s.name), s.shape, src, type);
    report.tensors++;
  }
  w.write(path);
  report.file_bytes = fs::file_size(path);
  return report;
}

}  // namespace distill
