// Each verb registers its options on a CLI11 subcommand and returns the function that runs it.
// Only src/cli prints and picks exit codes.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "kernels/qmatmul.h"

namespace distill::cli {

using VerbRun = std::function<int()>;

VerbRun add_pretrain(CLI::App& app);
VerbRun add_train(CLI::App& app);
VerbRun add_eval(CLI::App& app);
VerbRun add_generate(CLI::App& app);
VerbRun add_score(CLI::App& app);
VerbRun add_sample(CLI::App& app);
VerbRun add_bench(CLI::App& app);
VerbRun add_inspect(CLI::App& app);
VerbRun add_export(CLI::App& app);
VerbRun add_prune(CLI::App& app);
VerbRun add_import(CLI::App& app);
VerbRun add_tokenizer(CLI::App& app);
VerbRun add_prepare(CLI::App& app);
VerbRun add_serve(CLI::App& app);
VerbRun add_harvest(CLI::App& app);
VerbRun add_detect(CLI::App& app);
VerbRun add_audit(CLI::App& app);
VerbRun add_fingerprint(CLI::App& app);
// --weights f32|bf16|f16|q8_0 (or another name): the weight type a model runs with.
inline void add_weights_option(CLI::App& app, WeightType& target,
                               const std::string& name = "--weights",
                               const std::string& whose = "the model") {
  app.add_option_function<std::string>(
         name, [&target](const std::string& s) { target = parse_weight_type(s); },
         "weight type " + whose + " runs with: f32 (default), bf16, f16 or q8_0 (converted on "
         "load; linear layers only, embeddings and norms stay f32)")
      ->type_name("TYPE");
}

// Registers `tokenizer train` under the `tokenizer` verb (cmd_tokenizer_train.cpp).
void add_tokenizer_train(CLI::App& tokenizer_app);

}  // namespace distill::cli
