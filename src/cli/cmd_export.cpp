// distill export: a model directory to a deployable format (GGUF for llama.cpp).
#include <memory>

#include "cli/verbs.h"
#include "core/error.h"
#include "formats/gguf_export.h"
#include "formats/model_dir.h"

namespace distill::cli {

namespace {
struct ExportOptions {
  std::string model;             // model directory (config.json + model.safetensors)
  std::string format = "gguf";   // output format
  std::string type = "f16";      // tensor type of the matrices: f32, f16, bf16, q8_0
  std::string out;               // output file
  std::string tokenizer;         // tokenizer.json / tokenizer.model / "bytes"; "" = from the model
  std::string name;              // general.name; "" = "distill <model_type>"
};

GgmlType parse_type(const std::string& t) {
  if (t == "f32") return GgmlType::F32;
  if (t == "f16") return GgmlType::F16;
  if (t == "bf16") return GgmlType::BF16;
  if (t == "q8_0") return GgmlType::Q8_0;
  throw Error("--type '{}' is not supported (supported: f32, f16, bf16, q8_0)", t);
}
}  // namespace

VerbRun add_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  app.add_option("--model", o->model, "model directory (config.json + model.safetensors)")
      ->required();
  app.add_option("--format", o->format, "output format")->check(CLI::IsMember({"gguf"}));
  app.add_option("--type", o->type,
                 "tensor type of the matrices (norms and biases stay f32): f32, f16, bf16, q8_0")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  app.add_option("--out", o->out, "output file (.gguf)")->required();
  app.add_option("--tokenizer", o->tokenizer,
                 "vocabulary to embed: tokenizer.json, tokenizer.model, a directory holding one, "
                 "or 'bytes' (default: the model directory's, else bytes for a 256-token vocab)");
  app.add_option("--name", o->name, "general.name written into the file");
  return [o]() {
    std::unique_ptr<Model> model = load_model_dir(o->model);
    const GgufVocab vocab = gguf_export_vocab(*model, o->model, o->tokenizer);
    GgufExportOptions options;
    options.type = parse_type(o->type);
    options.name = o->name;
    const GgufExportReport r = export_gguf(*model, vocab, o->out, options);
    std::printf("wrote %s: GGUF v3, architecture %s, %zu tensors, %s matrices", o->out.c_str(),
                r.arch.c_str(), r.tensors, o->type.c_str());
    if (r.f16_fallbacks)
      std::printf(" (%zu written f16: rows not a multiple of 32)", r.f16_fallbacks);
    std::printf(", vocabulary %s (%zu tokens, tokenizer.ggml.model %s), %.1f MB\n",
                vocab.source.c_str(), vocab.tokens.size(), vocab.model.c_str(),
                double(r.file_bytes) / 1e6);
    return 0;
  };
}

}  // namespace distill::cli
