// Export of a Model to GGUF the way llama.cpp loads it: llama.cpp's architecture names, metadata
// keys and tensor names (what its convert_hf_to_gguf.py writes), and the vocabulary embedded.
//
// Conventions (checked against llama.cpp by tests/interop_test.cpp):
//  - gpt2 -> "gpt2"; llama and mistral -> "llama"; qwen2 -> "qwen2"; qwen3 -> "qwen3".
//  - A linear weight of ours, (out, in) row-major, is a GGUF tensor with dims [in, out] and the
//    same bytes (GPT-2's Conv1D weights are already stored (out, in) by us).
//  - "llama" applies RoPE to adjacent pairs (x[2i], x[2i+1]) where Hugging Face rotates halves
//    (x[i], x[i+HD/2]); so, like llama.cpp's converter, the rows of q_proj and k_proj (weights and
//    biases) are permuted within each head: GGUF row 2i+t = HF row t*HD/2+i. qwen2/qwen3 use
//    llama.cpp's NEOX RoPE (halves) and are stored unpermuted.
//  - 1-D tensors (norms, biases) are always F32; with Q8_0, a matrix whose rows are not a multiple
//    of 32 is written F16 (as llama.cpp's converter falls back).
//  - llama3 RoPE scaling becomes the rope_freqs.weight tensor (per-frequency divisors); linear
//    scaling becomes rope.scaling.type/factor.
#pragma once
#include <cstdint>
#include <string>

#include "formats/gguf.h"
#include "formats/gguf_export_vocab.h"
#include "model/model.h"

namespace distill {

struct GgufExportOptions {
  GgmlType type = GgmlType::F32;  // matrices: F32, F16, BF16 or Q8_0
  std::string name;               // general.name; empty: "distill <model_type>"
};

struct GgufExportReport {
  std::string arch;          // general.architecture written
  size_t tensors = 0;
  size_t f16_fallbacks = 0;  // Q8_0 requested, row length not a multiple of 32: written F16
  uint64_t file_bytes = 0;
};

// llama.cpp's architecture name for this config; throws naming what llama.cpp cannot run (e.g.
// qwen2 with head_dim != hidden/heads, an MLP bias on qwen2/qwen3, llama3 RoPE scaling on qwen).
std::string gguf_arch_name(const ModelConfig& config);
// The GGUF tensor name of our parameter `hf_name` (e.g. "model.layers.3.mlp.up_proj.weight" ->
// "blk.3.ffn_up.weight").
std::string gguf_tensor_name(const ModelConfig& config, const std::string& hf_name);
// Heads whose rows must be permuted for llama.cpp's adjacent-pair RoPE (num_heads for q_proj,
// num_kv_heads for k_proj, weights and biases, arch "llama" only); 0 for every other tensor.
int gguf_rope_permute_heads(const ModelConfig& config, const std::string& hf_name);
// Permutes the rows of `data` (rows, cols) in place, per head of rows/heads rows: forward maps
// HF's half-split order to llama.cpp's interleaved order, inverse undoes it.
void gguf_rope_permute(float* data, int64_t rows, int64_t cols, int heads, bool inverse);
// llama3 RoPE scaling as llama.cpp stores it: divisor per frequency (head_dim/2 values).
std::vector<float> gguf_llama3_rope_factors(const ModelConfig& config);

// The vocabulary to embed: `tokenizer` when given (a file, a directory, or "bytes"), else the
// model directory's tokenizer.json / tokenizer.model, else the byte-level vocabulary when the
// model's vocab_size is 256. Padded to the model's vocab_size.
GgufVocab gguf_export_vocab(const Model& model, const std::string& model_dir,
                            const std::string& tokenizer);

// Writes `model` with `vocab` to `path` (atomically).
GgufExportReport export_gguf(const Model& model, const GgufVocab& vocab, const std::string& path,
                             const GgufExportOptions& options = {});

}  // namespace distill
