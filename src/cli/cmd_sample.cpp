#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"

#include "cli/verbs.h"
#include "formats/model_dir.h"
#include "infer/generator.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill::cli {

namespace {
struct SampleOptions {
  WeightType weights = WeightType::F32;
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
  add_weights_option(app, o->weights);
  return [o]() {
    // KV-cache generation, all samples of all prompts decoded together; stops at the EOS token.
    std::unique_ptr<Model> model = load_model_dir(o->model);
    model->set_weight_type(o->weights);
    auto tok = load_model_tokenizer(o->model);
    if (o->num_samples < 1 || o->max_tokens < 1)
      throw Error("--num-samples and --max-tokens must be positive");
    std::vector<std::vector<int32_t>> prompts;
    size_t longest = 0;
    for (const std::string& prompt : o->prompts) {
      std::vector<int32_t> ids = tok->encode(prompt);
      if (ids.empty()) throw Error("prompt {} encodes to no tokens", nlohmann::json(prompt).dump());
      longest = std::max(longest, ids.size());
      for (int i = 0; i < o->num_samples; i++) prompts.push_back(ids);
    }
    const int context = int(longest) + o->max_tokens;
    if (context > model->config().max_position)
      throw Error("prompt of {} tokens + {} new tokens exceeds the context of {} ({} tokens)",
                  longest, o->max_tokens, o->model, model->config().max_position);
    GenerateOptions g;
    g.sampling = SamplingOptions{o->temperature, o->top_k, o->top_p};
    g.sampling.vocab_limit = tok->vocab_size();  // ids past it (padding) have no text
    g.max_tokens = o->max_tokens;
    g.seed = o->seed;
    if (const auto eos = tok->eos_id()) g.stop_ids.push_back(*eos);
    Generator gen(*model, std::min<int>(int(prompts.size()), 8), context);
    const std::vector<Generation> out = gen.generate(prompts, g);
    for (size_t p = 0; p < o->prompts.size(); p++)
      for (int i = 0; i < o->num_samples; i++) {
        const Generation& r = out[p * size_t(o->num_samples) + size_t(i)];
        std::printf("--- sample %d (prompt %s)\n%s%s\n", i + 1,
                    nlohmann::json(o->prompts[p]).dump().c_str(), o->prompts[p].c_str(),
                    tok->decode(r.tokens).c_str());
      }
    return 0;
  };
}

}  // namespace distill::cli
