#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"

#include "cli/verbs.h"
#include "core/rng.h"
#include "formats/model_dir.h"
#include "infer/sampler.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill::cli {

namespace {
struct SampleOptions {
  std::string model;                 // model directory
  std::vector<std::string> prompts = {"\n"};
  int max_tokens = 200;              // new tokens per sample
  int num_samples = 1;               // samples per prompt
  float temperature = 0.8f;
  int top_k = 0;
  float top_p = 0.95f;
  uint64_t seed = 0;
};
}  // namespace

VerbRun add_sample(CLI::App& app) {
  auto o = std::make_shared<SampleOptions>();
  app.add_option("model", o->model, "model directory (config.json + model.safetensors)")
      ->required();
  app.add_option("--prompt", o->prompts, "prompt text (repeatable)");
  app.add_option("--max-tokens", o->max_tokens, "new tokens per sample");
  app.add_option("--num-samples", o->num_samples, "samples per prompt");
  app.add_option("--temperature", o->temperature, "sampling temperature (0: greedy)");
  app.add_option("--top-k", o->top_k, "keep the k most likely tokens (0: all)");
  app.add_option("--top-p", o->top_p, "nucleus mass");
  app.add_option("--seed", o->seed, "sampling seed");
  return [o]() {
    // Byte-level models only until the tokenizer issue lands.
    std::unique_ptr<Model> model = load_model_dir(o->model);
    if (model->config().vocab_size < ByteTokenizer::kVocabSize)
      throw Error("{}: vocabulary of {} tokens is not byte-level (256)", o->model,
                  model->config().vocab_size);
    Rng rng(o->seed);
    SamplingOptions s{o->temperature, o->top_k, o->top_p};
    const int context = std::min(model->config().max_position, 1024);
    for (const std::string& prompt : o->prompts) {
      for (int i = 0; i < o->num_samples; i++) {
        const auto ids = generate(*model, ByteTokenizer::encode(prompt), o->max_tokens, context,
                                  s, rng);
        std::printf("--- sample %d (prompt %s)\n%s%s\n", i + 1,
                    nlohmann::json(prompt).dump().c_str(), prompt.c_str(),
                    ByteTokenizer::decode(ids.data(), ids.size()).c_str());
      }
    }
    return 0;
  };
}

}  // namespace distill::cli
