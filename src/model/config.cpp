#include "model/config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include "core/error.h"

namespace distill {
namespace {

using json = nlohmann::json;

// Reads a required numeric field; the error names the file, the key and what was found.
template <typename T>
T required(const json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || j[key].is_null())
    throw Error("{}: config field '{}' is required for model_type '{}'", source, key,
                j.value("model_type", "?"));
  const json& v = j[key];
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) throw Error("{}: config field '{}' must be true/false, found {}", source, key, v.dump());
  } else {
    if (!v.is_number()) throw Error("{}: config field '{}' must be a number, found {}", source, key, v.dump());
  }
  return v.get<T>();
}

template <typename T>
T optional(const json& j, const char* key, T fallback, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return required<T>(j, key, source);
}

// HF stores a single id or a list (Llama 3 has several eos ids); we keep the first.
int token_id(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  if (j[key].is_array()) return j[key].empty() ? -1 : j[key][0].get<int>();
  return j[key].is_number_integer() ? j[key].get<int>() : -1;
}

RopeScaling parse_rope_scaling(const json& j, const std::string& source) {
  RopeScaling s;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return s;
  const json& r = j["rope_scaling"];
  if (!r.is_object()) throw Error("{}: rope_scaling must be an object or null", source);
  const std::string type = r.value("rope_type", r.value("type", std::string("default")));
  if (type == "default") return s;
  if (type == "linear") {
    s.type = RopeScaling::Type::Linear;
    s.factor = required<float>(r, "factor", source + " rope_scaling");
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::Llama3;
    s.factor = required<float>(r, "factor", source + " rope_scaling");
    s.low_freq_factor = required<float>(r, "low_freq_factor", source + " rope_scaling");
    s.high_freq_factor = required<float>(r, "high_freq_factor", source + " rope_scaling");
    s.original_max_position =
        required<int>(r, "original_max_position_embeddings", source + " rope_scaling");
  } else {
    throw Error("{}: rope_scaling type '{}' is not supported (supported: default, linear, llama3)",
                source, type);
  }
  return s;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error("{}: config must be a JSON object", source);
  if (!j.contains("model_type") || !j["model_type"].is_string())
    throw Error("{}: config has no 'model_type' string", source);
  ModelConfig c;
  c.model_type = j["model_type"].get<std::string>();
  c.bos_token_id = token_id(j, "bos_token_id");
  c.eos_token_id = token_id(j, "eos_token_id");
  if (c.model_type == "gpt2") {
    c.arch = Arch::Gpt2;
    c.vocab_size = required<int>(j, "vocab_size", source);
    c.hidden_size = required<int>(j, "n_embd", source);
    c.num_layers = required<int>(j, "n_layer", source);
    c.num_heads = required<int>(j, "n_head", source);
    c.num_kv_heads = c.num_heads;
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
    c.intermediate_size = optional<int>(j, "n_inner", 4 * c.hidden_size, source);
    c.max_position = required<int>(j, "n_positions", source);
    c.norm_eps = optional<float>(j, "layer_norm_epsilon", 1e-5f, source);
    c.tie_word_embeddings = optional<bool>(j, "tie_word_embeddings", true, source);
    const std::string act = j.value("activation_function", std::string("gelu_new"));
    if (act != "gelu_new" && act != "gelu_pytorch_tanh")
      throw Error("{}: activation_function '{}' is not supported for gpt2 (supported: gelu_new, "
                  "gelu_pytorch_tanh)", source, act);
    if (!c.tie_word_embeddings)
      throw Error("{}: gpt2 with tie_word_embeddings=false is not supported", source);
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" ||
             c.model_type == "qwen3") {
    c.arch = Arch::Llama;
    c.vocab_size = required<int>(j, "vocab_size", source);
    c.hidden_size = required<int>(j, "hidden_size", source);
    c.num_layers = required<int>(j, "num_hidden_layers", source);
    c.num_heads = required<int>(j, "num_attention_heads", source);
    c.num_kv_heads = optional<int>(j, "num_key_value_heads", c.num_heads, source);
    c.head_dim = optional<int>(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0,
                               source);
    c.intermediate_size = required<int>(j, "intermediate_size", source);
    c.max_position = optional<int>(j, "max_position_embeddings", 2048, source);
    c.norm_eps = optional<float>(j, "rms_norm_eps", 1e-6f, source);
    c.rope_theta = optional<float>(j, "rope_theta", 10000.0f, source);
    c.rope_scaling = parse_rope_scaling(j, source);
    c.tie_word_embeddings = optional<bool>(j, "tie_word_embeddings", false, source);
    const std::string act = j.value("hidden_act", std::string("silu"));
    if (act != "silu")
      throw Error("{}: hidden_act '{}' is not supported (supported: silu)", source, act);
    const bool attention_bias = optional<bool>(j, "attention_bias", false, source);
    c.qkv_bias = attention_bias || c.model_type == "qwen2";
    c.o_bias = attention_bias && c.model_type != "qwen2";
    c.mlp_bias = optional<bool>(j, "mlp_bias", false, source);
    c.qk_norm = c.model_type == "qwen3";
    if (c.model_type == "qwen2" || c.model_type == "qwen3") {
      if (optional<bool>(j, "use_sliding_window", false, source))
        throw Error("{}: use_sliding_window=true is not supported", source);
    }
  } else {
    throw Error("{}: model_type '{}' is not supported (supported: gpt2, llama, mistral, qwen2, "
                "qwen3)", source, c.model_type);
  }
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot open config: {}", path, std::strerror(errno));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {  // parse errors and number overflow (1e999)
    throw Error("{}: config is not valid JSON: {}", path, e.what());
  }
  return from_json(j, path);
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int v, const char* what) {
    if (v <= 0) throw Error("{}: {} must be positive, found {}", source, what, v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden size");
  positive(num_layers, "number of layers");
  positive(num_heads, "number of attention heads");
  positive(num_kv_heads, "number of key/value heads");
  positive(head_dim, "head_dim");
  positive(intermediate_size, "intermediate size");
  positive(max_position, "maximum position");
  if (num_heads % num_kv_heads != 0)
    throw Error("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                source, num_heads, num_kv_heads);
  if (arch == Arch::Gpt2 && hidden_size % num_heads != 0)
    throw Error("{}: n_embd ({}) must be divisible by n_head ({})", source, hidden_size, num_heads);
  if (arch == Arch::Llama && head_dim % 2 != 0)
    throw Error("{}: head_dim ({}) must be even for rotary embeddings", source, head_dim);
}

json ModelConfig::to_json() const {
  json j;
  j["model_type"] = model_type;
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_id >= 0) j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "float32";
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (arch == Arch::Gpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = hidden_size;
    j["n_layer"] = num_layers;
    j["n_head"] = num_heads;
    j["n_inner"] = intermediate_size;
    j["n_positions"] = max_position;
    j["n_ctx"] = max_position;
    j["layer_norm_epsilon"] = norm_eps;
    j["activation_function"] = "gelu_new";
    // transformers' defaults, written out so the file says what the model is.
    j["resid_pdrop"] = 0.0;
    j["embd_pdrop"] = 0.0;
    j["attn_pdrop"] = 0.0;
    j["scale_attn_weights"] = true;
    return j;
  }
  static const std::map<std::string, std::string> class_names = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  j["architectures"] = {class_names.at(model_type)};
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position;
  j["rms_norm_eps"] = norm_eps;
  j["rope_theta"] = rope_theta;
  j["hidden_act"] = "silu";
  if (model_type != "qwen2") j["attention_bias"] = qkv_bias;
  if (model_type == "llama") j["mlp_bias"] = mlp_bias;
  switch (rope_scaling.type) {
    case RopeScaling::Type::None: j["rope_scaling"] = nullptr; break;
    case RopeScaling::Type::Linear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
      break;
    case RopeScaling::Type::Llama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", rope_scaling.factor},
                           {"low_freq_factor", rope_scaling.low_freq_factor},
                           {"high_freq_factor", rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings", rope_scaling.original_max_position}};
      break;
  }
  return j;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = hidden_size, F = intermediate_size, V = vocab_size;
  int64_t per_layer = C * (q_dim() + 2 * kv_dim()) + q_dim() * C;
  if (arch == Arch::Gpt2) {
    per_layer += 2 * C * F + 4 * C;  // mlp + two layernorms
    per_layer += q_dim() + 2 * kv_dim() + C + F + C;  // biases
    return V * C + int64_t(max_position) * C + int64_t(num_layers) * per_layer + 2 * C;
  }
  per_layer += 3 * C * F + 2 * C;
  if (qkv_bias) per_layer += q_dim() + 2 * kv_dim();
  if (o_bias) per_layer += C;
  if (mlp_bias) per_layer += 2 * F + C;
  if (qk_norm) per_layer += 2 * head_dim;
  return V * C * (tie_word_embeddings ? 1 : 2) + num_layers * per_layer + C;
}

}  // namespace distill
