// distill import: a llama.cpp GGUF model into a Hugging Face model directory.
#include <memory>

#include "cli/verbs.h"
#include "core/error.h"
#include "formats/gguf_import.h"

namespace distill::cli {

namespace {
struct ImportOptions {
  std::string gguf;           // input .gguf file
  std::string out;            // output model directory
  std::string dtype = "f32";  // safetensors dtype of the written weights: f32, f16, bf16
};
}  // namespace

VerbRun add_import(CLI::App& app) {
  auto o = std::make_shared<ImportOptions>();
  app.add_option("--gguf", o->gguf, "GGUF model file (gpt2, llama, qwen2, qwen3)")->required();
  app.add_option("--out", o->out, "output model directory (config.json + model.safetensors)")
      ->required();
  app.add_option("--dtype", o->dtype, "weight dtype written: f32, f16, bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  return [o]() {
    SaveModelOptions options;
    options.dtype = o->dtype == "f16" ? DType::F16 : o->dtype == "bf16" ? DType::BF16 : DType::F32;
    const GgufImportReport r = import_gguf(o->gguf, o->out, options);
    std::printf("wrote %s: model_type %s (GGUF architecture %s, %zu tensors dequantized to %s)",
                o->out.c_str(), r.model_type.c_str(), r.arch.c_str(), r.tensors,
                o->dtype.c_str());
    if (!r.tokenizer_file.empty()) std::printf(", vocabulary as %s\n", r.tokenizer_file.c_str());
    else std::printf("\nwarning: no tokenizer file written: %s\n", r.tokenizer_note.c_str());
    return 0;
  };
}

}  // namespace distill::cli
