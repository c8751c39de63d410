#include "formats/model_dir.h"

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "formats/safetensors.h"

namespace distill {
namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Buffers that some HF checkpoints carry and that are not parameters.
bool is_known_buffer(const std::string& name) {
  auto ends = [&](const char* suf) {
    const std::string s(suf);
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".attn.bias") || ends(".attn.masked_bias") || ends("rotary_emb.inv_freq");
}

// GPT-2 checkpoints saved from GPT2Model (the hub's gpt2) lack the "transformer." prefix.
std::string canonical_name(const Model& model, const std::string& name) {
  if (model.config().arch == Arch::Gpt2 && name.rfind("transformer.", 0) != 0 &&
      name != "lm_head.weight")
    return "transformer." + name;
  return name;
}

}  // namespace

void save_model_dir(const Model& model, const std::string& dir, const SaveModelOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("{}: cannot create model directory: {}", dir, ec.message());
  if (options.dtype != DType::F32 && options.dtype != DType::F16 && options.dtype != DType::BF16)
    throw Error("{}: weights can be saved as F32, F16 or BF16, not {}", dir,
                dtype_name(options.dtype));
  const std::string config = model.config().to_json().dump(2) + "\n";
  write_file_atomic(dir + "/config.json", config.data(), config.size());

  // HF layout copies: transposed GPT-2 Conv1D weights and non-F32 dtypes need their own bytes.
  std::vector<std::vector<uint8_t>> owned;
  std::vector<TensorRef> refs;
  const size_t esize = dtype_size(options.dtype);
  for (const ParamSpec& s : model.param_specs()) {
    const float* src = model.params() + s.offset;
    std::vector<float> transposed;
    if (s.hf_transposed) {
      transposed = to_hf_layout(s, src);
      src = transposed.data();
    }
    const void* data = src;
    if (options.dtype != DType::F32 || s.hf_transposed) {
      owned.emplace_back(s.numel * esize);
      convert_from_f32(owned.back().data(), options.dtype, src, s.numel);
      data = owned.back().data();
    }
    refs.push_back(TensorRef{s.name, options.dtype, s.hf_shape(), data, s.numel * esize});
  }
  std::map<std::string, std::string> metadata = options.metadata;
  metadata["format"] = "pt";  // what transformers expects to find
  write_safetensors_sharded(dir, refs, options.max_shard_bytes, metadata);
  for (const std::string& file : options.files)
    write_file_atomic(dir + "/" + fs::path(file).filename().string(), read_file_text(file));
}

std::vector<float> to_hf_layout(const ParamSpec& s, const float* ours) {
  if (!s.hf_transposed) return std::vector<float>(ours, ours + s.numel);
  const int64_t rows = s.shape[0], cols = s.shape[1];
  std::vector<float> out(s.numel);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) out[size_t(c) * rows + r] = ours[size_t(r) * cols + c];
  return out;
}

void load_weights(Model& model, const SafetensorsModel& weights, const std::string& prefix) {
  std::set<std::string> seen;
  for (const TensorInfo& t : weights.tensors()) {
    if (t.name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string name = canonical_name(model, t.name.substr(prefix.size()));
    const ParamSpec* s = model.find_param(name);
    if (!s) {
      if (is_known_buffer(name)) continue;
      // Tied checkpoints may still carry the head; it must equal the embedding, so skip it.
      if (name == "lm_head.weight" && model.config().tie_word_embeddings) continue;
      throw Error("{}: tensor '{}' is not a parameter of a {} model with this config",
                  weights.path(), t.name, model.config().model_type);
    }
    if (t.shape != s->hf_shape())
      throw Error("{}: tensor '{}' has shape {}, expected {}", weights.path(), t.name,
                  shape_str(t.shape), shape_str(s->hf_shape()));
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16 &&
        t.dtype != DType::F64)
      throw Error("{}: tensor '{}' has dtype {}, expected a float type", weights.path(), t.name,
                  dtype_name(t.dtype));
    float* dst = model.params() + s->offset;
    if (s->hf_transposed) {
      std::vector<float> tmp(s->numel);
      convert_to_f32(tmp.data(), t.data, t.dtype, s->numel);
      const int64_t rows = s->shape[0], cols = s->shape[1];  // ours; HF is (cols, rows)
      for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) dst[size_t(r) * cols + c] = tmp[size_t(c) * rows + r];
    } else {
      convert_to_f32(dst, t.data, t.dtype, s->numel);
    }
    seen.insert(name);
  }
  for (const ParamSpec& s : model.param_specs())
    if (!seen.count(s.name))
      throw Error("{}: tensor '{}' is missing (expected shape {})", weights.path(), prefix + s.name,
                  shape_str(s.hf_shape()));
}

std::unique_ptr<Model> load_model_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("{}: not a model directory", dir);
  const ModelConfig config = ModelConfig::from_file(dir + "/config.json");
  auto model = std::make_unique<Model>(config, /*trainable=*/false);
  load_weights(*model, SafetensorsModel::open(dir));
  return model;
}

}  // namespace distill
