// Each verb registers its options on a CLI11 subcommand and returns the function that runs it.
// Only src/cli prints and picks exit codes.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

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
// Registers `tokenizer train` under the `tokenizer` verb (cmd_tokenizer_train.cpp).
void add_tokenizer_train(CLI::App& tokenizer_app);

}  // namespace distill::cli
