// Hugging Face-shaped model directories: config.json + model.safetensors (or shards with
// model.safetensors.index.json), HF tensor names and layouts, so `transformers` loads what we
// write and we load what it writes.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "model/model.h"

namespace distill {

class SafetensorsModel;

constexpr size_t kDefaultMaxShardBytes = size_t(2) << 30;  // transformers' "2GB"-ish default

struct SaveModelOptions {
  DType dtype = DType::F32;                 // F32, F16 or BF16
  size_t max_shard_bytes = kDefaultMaxShardBytes;
  std::map<std::string, std::string> metadata;  // extra safetensors __metadata__
  // Files copied into the directory under their own names (a tokenizer.json, its config):
  // what makes the directory usable on its own.
  std::vector<std::string> files;
};

// Writes config.json and the weights into `dir` (created if missing). Each file is written
// atomically.
void save_model_dir(const Model& model, const std::string& dir,
                    const SaveModelOptions& options = {});

// Reads `dir`/config.json and the weights.
std::unique_ptr<Model> load_model_dir(const std::string& dir);  // inference-only (no gradients)

// Copies every parameter of `model` from `weights` (any float dtype, HF layout). Errors name the
// tensor: missing, wrong shape, not a float dtype, or a tensor the model does not have. With a
// prefix, only tensors named prefix + <HF name> are read (e.g. "param." in test fixtures).
void load_weights(Model& model, const SafetensorsModel& weights, const std::string& prefix = "");

// A tensor of ours (parameters, gradients or moments, in our layout) in the HF layout.
std::vector<float> to_hf_layout(const ParamSpec& spec, const float* ours);

}  // namespace distill
