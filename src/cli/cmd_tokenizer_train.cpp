// `distill tokenizer train`: trains a byte-level BPE tokenizer on text files and writes a Hugging
// Face tokenizer.json and tokenizer_config.json.
#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "core/error.h"
#include "tokenizer/bpe_trainer.h"

namespace distill::cli {

namespace {

struct TokenizerTrainOptions {
  std::vector<std::string> files;  // UTF-8 text files, read line by line
  int vocab_size = 32000;          // special tokens + 256 bytes + merges
  int64_t min_frequency = 2;       // pairs seen fewer times are not merged
  std::vector<std::string> special = {"<|endoftext|>"};  // special tokens, ids 0.. in order
  bool no_special = false;         // train without special tokens
  std::string out;                 // output directory
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_tokenizer_train(const TokenizerTrainOptions& o) {
  BpeTrainerOptions t;
  t.vocab_size = o.vocab_size;
  t.min_frequency = o.min_frequency;
  t.special_tokens = o.no_special ? std::vector<std::string>{} : o.special;
  BpeTrainer trainer(t);

  const auto t0 = std::chrono::steady_clock::now();
  int64_t total_bytes = 0;
  for (const std::string& f : o.files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    if (ec) throw Error("{}: cannot read: {}", f, ec.message());
    total_bytes += int64_t(size);
  }
  ProgressBar reading(long(std::max<int64_t>(total_bytes, 1)));
  int64_t before = 0;
  for (const std::string& f : o.files) {
    trainer.add_file(f, [&](int64_t done, int64_t) {
      reading.update(long(before + done), fmt::format("reading {}: {}B of {}B", f,
                                                      format_count(double(before + done)),
                                                      format_count(double(total_bytes))));
    });
    before += int64_t(std::filesystem::file_size(f));
  }
  reading.print(fmt::format("counted {} words ({} distinct) in {} files, {}B, in {:.2f}s",
                            format_count(double(trainer.words_seen())),
                            format_count(double(trainer.unique_words())), o.files.size(),
                            format_count(double(total_bytes)), seconds_since(t0)));

  const auto t1 = std::chrono::steady_clock::now();
  const int64_t wanted = o.vocab_size - int64_t(t.special_tokens.size()) - 256;
  ProgressBar merging(long(std::max<int64_t>(wanted, 1)));
  const BpeVocabulary v = trainer.train([&](int64_t done, int64_t total) {
    merging.update(long(done), fmt::format("merges: {} of {}", done, total));
  });
  merging.print(fmt::format("learned {} merges in {:.2f}s ({} tokens{})", v.merges.size(),
                            seconds_since(t1), v.tokens.size(),
                            int64_t(v.merges.size()) < wanted
                                ? "; stopped early: no pair left that is seen --min-frequency times or more"
                                : ""));
  save_bpe_tokenizer(v, o.out);
  std::printf("wrote %s/tokenizer.json and %s/tokenizer_config.json (%zu tokens)\n", o.out.c_str(),
              o.out.c_str(), v.tokens.size());
  return 0;
}

}  // namespace

void add_tokenizer_train(CLI::App& tokenizer_app) {
  auto o = std::make_shared<TokenizerTrainOptions>();
  CLI::App* app = tokenizer_app.add_subcommand(
      "train", "train a byte-level BPE tokenizer (GPT-2 style) on text files");
  app->add_option("--files", o->files, "UTF-8 text files, comma-separated (read line by line)")
      ->required()
      ->delimiter(',')
      ->check(CLI::ExistingFile);
  app->add_option("--vocab-size", o->vocab_size, "tokens in all: special + 256 bytes + merges")
      ->capture_default_str();
  app->add_option("--min-frequency", o->min_frequency, "pairs seen fewer times are not merged")
      ->capture_default_str();
  app->add_option("--special", o->special, "special token (repeatable; ids 0.. in order)")
      ->capture_default_str();
  app->add_flag("--no-special", o->no_special, "no special tokens");
  app->add_option("--out", o->out, "output directory (tokenizer.json, tokenizer_config.json)")
      ->required();
  // The verb runs from CLI11's callback (the tokenizer verb's run function returns 0 for it), so
  // it reports its own errors; CLI::RuntimeError carries the exit code to main's app.exit().
  app->callback([o, app]() {
    // Root --threads is applied by main after parsing, which is too late for this callback.
    const CLI::App* root = app;
    while (root->get_parent()) root = root->get_parent();
    if (const CLI::Option* threads = root->get_option_no_throw("--threads");
        threads && threads->count() > 0 && threads->as<int>() > 0)
      omp_set_num_threads(threads->as<int>());
    int rc = 1;
    try {
      rc = run_tokenizer_train(*o);
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace distill::cli
