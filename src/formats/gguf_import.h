// Import of llama.cpp GGUF models (architectures gpt2, llama, qwen2, qwen3) into a Model: the
// config from the GGUF metadata, the tensors dequantized to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, Q4_K, Q6_K), llama's q/k RoPE row permutation undone (see gguf_export.h). The
// inverse of export_gguf: export then import gives back the same parameters (exactly for f32).
#pragma once
#include <memory>
#include <string>

#include "formats/gguf.h"
#include "formats/model_dir.h"
#include "model/model.h"

namespace distill {

// The ModelConfig a GGUF file describes. Errors name the file and the key or tensor that is
// missing, has the wrong type, or describes something distill does not implement (partial
// rotary, per-layer head counts, YaRN, ...). "llama" GGUFs come back as model_type "llama"
// (Mistral's GGUFs are indistinguishable from it, and compute the same function).
ModelConfig gguf_model_config(const GgufFile& file);

std::unique_ptr<Model> load_gguf_model(const GgufFile& file);
std::unique_ptr<Model> load_gguf_model(const std::string& path);  // inference-only (no gradients)

struct GgufImportReport {
  std::string arch;            // general.architecture
  std::string model_type;      // of the written config.json
  size_t tensors = 0;
  std::string tokenizer_file;  // "tokenizer.json" / "tokenizer.model", or "" when not written
  std::string tokenizer_note;  // why no tokenizer file was written
};

// Loads `gguf_path` and writes it as a Hugging Face model directory into `out_dir`: config.json,
// model.safetensors, and the embedded vocabulary as tokenizer files (gguf_import_vocab.h) — a
// vocabulary that has no such file is reported in tokenizer_note, not an error.
GgufImportReport import_gguf(const std::string& gguf_path, const std::string& out_dir,
                             const SaveModelOptions& options = {});

}  // namespace distill
