#include "formats/gguf_import.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <set>

#include "core/error.h"
#include "formats/ggml_quant.h"
#include "formats/gguf_export.h"
#include "formats/gguf_import_vocab.h"

namespace distill {

namespace {

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); i++) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// A positive count that fits an int; arrays (per-layer values) are accepted when all equal.
int read_count(const GgufFile& f, const std::string& key, const GgufValue& v) {
  int64_t n;
  if (v.type == GgufType::ARRAY) {
    const std::vector<int64_t> all = v.as_ints(key);
    if (all.empty() || std::adjacent_find(all.begin(), all.end(), std::not_equal_to<>()) != all.end())
      throw Error("{}: {} differs between layers; distill needs one value for all layers",
                  f.path(), key);
    n = all[0];
  } else {
    n = v.as_int(key);
  }
  if (n <= 0 || n > (int64_t(1) << 30))
    throw Error("{}: {} = {} is not a valid count", f.path(), key, n);
  return int(n);
}

int required_count(const GgufFile& f, const std::string& key) {
  return read_count(f, key, f.get(key));
}

std::optional<int> optional_count(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::nullopt;
  return read_count(f, key, *v);
}

float optional_float(const GgufFile& f, const std::string& key, float fallback) {
  const GgufValue* v = f.find(key);
  if (!v) return fallback;
  const double d = v->as_float(key);
  if (!std::isfinite(d)) throw Error("{}: {} = {} is not finite", f.path(), key, d);
  return float(d);
}

// llama3 scaling from llama.cpp's per-frequency divisors. Only the frequencies matter, and the
// divisors do not pin the parameters down (scaling original_max_position and both factors alike
// changes nothing; with fewer than two blended frequencies the factors are free within bounds):
// original_max_position comes from rope.scaling.original_context_length (8192, Llama 3's value,
// when absent), the factors are fitted, and the result must reproduce every divisor.
RopeScaling fit_llama3(const GgufFile& f, const std::vector<float>& div, const ModelConfig& c,
                       int orig_ctx) {
  const int n = c.head_dim / 2;
  if (int(div.size()) != n)
    throw Error("{}: rope_freqs.weight has {} values, expected head_dim/2 = {}", f.path(),
                div.size(), n);
  std::vector<double> base(n), wavelen(n);
  {
    std::vector<float> b(n);
    rope_inv_freq(b.data(), c.head_dim, c.rope_theta, RopeScaling{});
    for (int i = 0; i < n; i++) {
      base[i] = b[i];
      wavelen[i] = 2.0 * std::numbers::pi / b[i];
    }
  }
  const double factor = *std::max_element(div.begin(), div.end());
  RopeScaling s;
  if (factor <= 1.0 + 1e-6) return s;  // all ones: no scaling
  s.type = RopeScaling::Type::Llama3;
  s.factor = float(factor);
  s.original_max_position = orig_ctx;
  const double L = orig_ctx, tol = 1e-4 * factor;
  std::vector<int> smooth, ones, full;
  for (int i = 0; i < n; i++) {
    if (std::fabs(div[i] - 1.0) < tol) ones.push_back(i);
    else if (std::fabs(div[i] - factor) < tol) full.push_back(i);
    else smooth.push_back(i);
  }
  if (smooth.size() >= 2) {
    auto point = [&](int i) {
      const double sm = (1.0 / div[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
      return std::pair<double, double>(L / wavelen[i], sm);
    };
    const auto [x1, s1] = point(smooth.front());
    const auto [x2, s2] = point(smooth.back());
    const double slope = (s2 - s1) / (x2 - x1);  // 1 / (high - low)
    s.low_freq_factor = float(x1 - s1 / slope);
    s.high_freq_factor = float(s.low_freq_factor + 1.0 / slope);
  } else if (smooth.size() == 1) {
    // Put the low-frequency boundary halfway to the first fully scaled wavelength, then solve
    // the one smooth point's equation for the high-frequency factor.
    const int i = smooth[0];
    const double w_full = full.empty() ? wavelen[i] * 2 : wavelen[full.front()];
    const double lw = (wavelen[i] + w_full) / 2;
    s.low_freq_factor = float(L / lw);
    const double sm = (1.0 / div[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
    s.high_freq_factor = float(s.low_freq_factor + (L / wavelen[i] - s.low_freq_factor) / sm);
  } else {
    // Any boundaries between the unscaled and the fully scaled wavelengths reproduce the divisors.
    const double w_one = ones.empty() ? 0.0 : wavelen[ones.back()];
    const double w_full = wavelen[full.front()];
    const double hw = ones.empty() ? w_full / 3 : w_one + (w_full - w_one) / 3;
    const double lw = ones.empty() ? w_full * 2 / 3 : w_one + 2 * (w_full - w_one) / 3;
    s.high_freq_factor = float(L / hw);
    s.low_freq_factor = float(L / lw);
  }
  bool ok = s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0;
  if (ok) {
    std::vector<float> scaled(n);
    rope_inv_freq(scaled.data(), c.head_dim, c.rope_theta, s);
    for (int i = 0; i < n && ok; i++)
      ok = std::fabs(base[i] / scaled[i] - div[i]) <= 1e-3 * div[i];
  }
  if (!ok)
    throw Error("{}: rope_freqs.weight is not a llama3 RoPE scaling distill can reproduce", f.path());
  return s;
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get("general.architecture").as_string("general.architecture");
  ModelConfig c;
  if (arch == "gpt2") {
    c.arch = Arch::Gpt2;
    c.model_type = "gpt2";
  } else if (arch == "llama" || arch == "qwen2" || arch == "qwen3") {
    c.arch = Arch::Llama;
    c.model_type = arch;
  } else {
    throw Error("{}: GGUF architecture '{}' is not supported (supported: gpt2, llama, qwen2, qwen3)",
                f.path(), arch);
  }
  const std::string a = arch + ".";
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw Error("{}: tensor 'token_embd.weight' is missing", f.path());
  if (embd->dims.size() != 2)
    throw Error("{}: token_embd.weight has dims {}, expected [hidden, vocab]", f.path(),
                dims_string(embd->dims));
  if (embd->dims[1] <= 0 || embd->dims[1] > (int64_t(1) << 30))
    throw Error("{}: token_embd.weight has an invalid vocabulary size {}", f.path(), embd->dims[1]);
  c.vocab_size = int(embd->dims[1]);
  c.hidden_size = required_count(f, a + "embedding_length");
  c.num_layers = required_count(f, a + "block_count");
  c.num_heads = required_count(f, a + "attention.head_count");
  c.num_kv_heads = optional_count(f, a + "attention.head_count_kv").value_or(c.num_heads);
  c.intermediate_size = required_count(f, a + "feed_forward_length");
  c.max_position = required_count(f, a + "context_length");
  c.head_dim = optional_count(f, a + "attention.key_length").value_or(c.hidden_size / c.num_heads);
  if (const auto v = optional_count(f, a + "attention.value_length"); v && *v != c.head_dim)
    throw Error("{}: attention.value_length {} differs from key_length {}; distill needs them equal",
                f.path(), *v, c.head_dim);
  // Bounds before anything is sized by these numbers (a hostile file must not make us build
  // a billion-layer parameter list): every layer has tensors in the file, and the products the
  // model computes in int stay far from overflow.
  if (size_t(c.num_layers) > f.tensors().size())
    throw Error("{}: block_count {} but the file has only {} tensors", f.path(), c.num_layers,
                f.tensors().size());
  for (const auto& [value, key] : {std::pair{c.hidden_size, "embedding_length"},
                                   std::pair{c.num_heads, "attention.head_count"},
                                   std::pair{c.num_kv_heads, "attention.head_count_kv"},
                                   std::pair{c.head_dim, "attention.key_length"},
                                   std::pair{c.intermediate_size, "feed_forward_length"}})
    if (value > (1 << 20))
      throw Error("{}: {}{} = {} is beyond what distill supports (2^20)", f.path(), a, key, value);
  if (int64_t(c.num_heads) * c.head_dim > (1 << 24) || int64_t(c.vocab_size) * c.hidden_size > (int64_t(1) << 40))
    throw Error("{}: attention or embedding size out of range ({} heads x {}, vocab {} x {})",
                f.path(), c.num_heads, c.head_dim, c.vocab_size, c.hidden_size);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  auto token_id = [&](const char* key) {
    const GgufValue* v = f.find(key);
    const int64_t id = v ? v->as_int(key) : -1;
    return id >= 0 && id < c.vocab_size ? int(id) : -1;  // llama.cpp ignores bad ids too
  };
  c.bos_token_id = token_id("tokenizer.ggml.bos_token_id");
  c.eos_token_id = token_id("tokenizer.ggml.eos_token_id");

  if (c.arch == Arch::Gpt2) {
    c.norm_eps = optional_float(f, a + "attention.layer_norm_epsilon", 1e-5f);
    c.num_kv_heads = c.num_heads;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    if (!c.tie_word_embeddings)
      throw Error("{}: gpt2 with a separate output.weight is not supported", f.path());
  } else {
    c.norm_eps = optional_float(f, a + "attention.layer_norm_rms_epsilon", 1e-6f);
    c.rope_theta = optional_float(f, a + "rope.freq_base", 10000.0f);
    if (const auto rot = optional_count(f, a + "rope.dimension_count"); rot && *rot != c.head_dim)
      throw Error("{}: rope.dimension_count {} != head dim {}: partial rotary embeddings are not "
                  "supported", f.path(), *rot, c.head_dim);
    c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") || f.find_tensor("blk.0.attn_qkv.bias");
    c.o_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
    c.mlp_bias = f.find_tensor("blk.0.ffn_up.bias") != nullptr;
    c.qk_norm = f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
    if (c.qk_norm && arch != "qwen3")
      throw Error("{}: attn_q_norm in a '{}' model is not supported", f.path(), arch);
    std::string scaling = "none";
    if (const GgufValue* v = f.find(a + "rope.scaling.type")) scaling = v->as_string(a + "rope.scaling.type");
    const float factor = optional_float(f, a + "rope.scaling.factor", 1.0f);
    if (scaling == "linear" && factor != 1.0f) {
      c.rope_scaling.type = RopeScaling::Type::Linear;
      c.rope_scaling.factor = factor;
    } else if (scaling != "none" && scaling != "linear") {
      throw Error("{}: rope.scaling.type '{}' is not supported (supported: none, linear, and llama3 "
                  "as rope_freqs.weight)", f.path(), scaling);
    }
    if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
      if (c.rope_scaling.type != RopeScaling::Type::None)
        throw Error("{}: both rope.scaling.type linear and rope_freqs.weight", f.path());
      const int orig = optional_count(f, a + "rope.scaling.original_context_length").value_or(8192);
      c.validate(f.path());
      c.rope_scaling = fit_llama3(f, f.read_f32(*rf), c, orig);
    }
  }
  c.validate(f.path());
  // The model directory's config.json must describe the same model: e.g. transformers' qwen2
  // always has q/k/v biases and qwen3 always has q/k norms.
  const ModelConfig hf = ModelConfig::from_json(c.to_json(), f.path());
  if (hf.qkv_bias != c.qkv_bias || hf.o_bias != c.o_bias || hf.mlp_bias != c.mlp_bias ||
      hf.qk_norm != c.qk_norm)
    throw Error("{}: a '{}' GGUF with{} q/k/v biases, with{} an output bias, with{} MLP biases and "
                "with{} q/k norms has no Hugging Face {} equivalent", f.path(), arch,
                c.qkv_bias ? "" : "out", c.o_bias ? "" : "out", c.mlp_bias ? "" : "out",
                c.qk_norm ? "" : "out", c.model_type);
  return c;
}

std::unique_ptr<Model> load_gguf_model(const GgufFile& f) {
  const ModelConfig c = gguf_model_config(f);
  // Every tensor is found and its dims checked before the model is allocated, so a small hostile
  // file cannot make us allocate a model its tensors do not fill.
  const std::vector<ParamSpec> specs =
      c.arch == Arch::Gpt2 ? gpt2_param_specs(c) : llama_param_specs(c);
  struct Load {
    const ParamSpec* spec;
    const GgufTensorInfo* tensor;
    bool fused_qkv;  // tensor is attn_qkv: fills q, k and v (adjacent in our arena) at once
  };
  std::vector<Load> plan;
  std::set<std::string> used = {"rope_freqs.weight"};
  auto find = [&](const std::string& name, const std::string& ours,
                  const std::vector<int64_t>& want) {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t)
      throw Error("{}: tensor '{}' is missing (expected dims {}, for {})", f.path(), name,
                  dims_string(want), ours);
    if (t->dims != want)
      throw Error("{}: tensor '{}' has dims {}, expected {}", f.path(), name,
                  dims_string(t->dims), dims_string(want));
    used.insert(name);
    return t;
  };
  for (const ParamSpec& s : specs) {
    const std::string name = gguf_tensor_name(c, s.name);
    const int64_t cols = s.shape.size() == 2 ? s.shape[1] : 1;
    bool from_fused = false;
    if (c.arch == Arch::Llama && !f.find_tensor(name)) {
      // Some llama GGUFs fuse q, k and v into attn_qkv: it fills all three, from q's offset.
      for (const char* part : {".attn_q.", ".attn_k.", ".attn_v."}) {
        const size_t at = name.find(part);
        if (at == std::string::npos) continue;
        const std::string fused = name.substr(0, at) + ".attn_qkv." + name.substr(at + 8);
        if (!f.find_tensor(fused)) break;
        if (part[6] == 'q') {
          const int64_t rows = c.q_dim() + 2 * int64_t(c.kv_dim());
          plan.push_back({&s, find(fused, s.name, s.shape.size() == 2
                                                      ? std::vector<int64_t>{cols, rows}
                                                      : std::vector<int64_t>{rows}), true});
        }
        from_fused = true;
        break;
      }
    }
    if (!from_fused)
      plan.push_back(
          {&s, find(name, s.name, std::vector<int64_t>(s.shape.rbegin(), s.shape.rend())), false});
  }
  for (const GgufTensorInfo& t : f.tensors())
    if (!used.count(t.name))
      throw Error("{}: tensor '{}' is not part of a {} model with this config", f.path(), t.name,
                  c.model_type);
  for (const Load& l : plan)
    if (!ggml_can_dequantize(l.tensor->type)) f.read_f32(*l.tensor);  // throws naming the type

  auto model = std::make_unique<Model>(c, /*trainable=*/false);  // inference-only, as load_model_dir
  for (const Load& l : plan) {
    const ParamSpec& s = *model->find_param(l.spec->name);  // with the arena offset
    float* dst = model->params() + s.offset;
    const std::vector<float> data = f.read_f32(*l.tensor);
    std::copy(data.begin(), data.end(), dst);
    const int64_t cols = s.shape.size() == 2 ? s.shape[1] : 1;
    const int heads = gguf_rope_permute_heads(c, s.name);
    if (heads && l.fused_qkv) {
      gguf_rope_permute(dst, c.q_dim(), cols, c.num_heads, true);
      gguf_rope_permute(dst + size_t(c.q_dim()) * cols, c.kv_dim(), cols, c.num_kv_heads, true);
    } else if (heads) {
      gguf_rope_permute(dst, s.shape[0], cols, heads, true);
    }
  }
  return model;
}

std::unique_ptr<Model> load_gguf_model(const std::string& path) {
  return load_gguf_model(GgufFile::open(path));
}

GgufImportReport import_gguf(const std::string& gguf_path, const std::string& out_dir,
                             const SaveModelOptions& options) {
  const GgufFile f = GgufFile::open(gguf_path);
  std::unique_ptr<Model> model = load_gguf_model(f);
  save_model_dir(*model, out_dir, options);
  GgufImportReport r;
  r.arch = f.get("general.architecture").as_string("general.architecture");
  r.model_type = model->config().model_type;
  r.tensors = f.tensors().size();
  try {
    r.tokenizer_file =
        write_tokenizer_files(gguf_vocab_read(f), out_dir, model->config().max_position);
  } catch (const Error& e) {
    r.tokenizer_note = e.what();
  }
  return r;
}

}  // namespace distill
