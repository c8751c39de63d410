// distill: knowledge distillation for language models. `distill --help` lists the verbs.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <new>
#include <set>
#include <string>

#include "cli/verbs.h"
#include "core/dist.h"
#include "core/error.h"

namespace {

// Prints the error (naming the rank under MPI) and ends the run: under mpirun the whole job, as
// the other ranks would wait forever in their next collective.
int fail(const char* what) {
  if (distill::dist::size() > 1) {
    std::fprintf(stderr, "error (%s): %s\n", distill::dist::where().c_str(), what);
    distill::dist::abort(1);
  }
  std::fprintf(stderr, "error: %s\n", what);
  return 1;
}

int run(int argc, char** argv) {
  CLI::App app{"distill: train, distill, evaluate and export language models on the CPU"};
  app.require_subcommand(1);
  app.set_config("--config", "", "TOML file of option values (flags win); sections per verb");
  int threads = 0;
  app.add_option("--threads", threads, "worker threads (0: OMP_NUM_THREADS or all cores)")
      ->capture_default_str();
  app.option_defaults()->always_capture_default();
  app.fallthrough();  // root options (--threads, --config) may follow the verb
  std::map<CLI::App*, distill::cli::VerbRun> verbs;
  auto add = [&](const char* name, const char* help, auto adder) {
    CLI::App* sub = app.add_subcommand(name, help);
    verbs[sub] = adder(*sub);
  };
  add("prepare", "make task and prompt files from text (distill prepare task)",
      distill::cli::add_prepare);
  add("pretrain", "train a model from scratch on text files", distill::cli::add_pretrain);
  add("train", "distill a student from a teacher (online or from a dataset)",
      distill::cli::add_train);
  add("generate", "teacher completions with top-k log-probabilities, as a dataset",
      distill::cli::add_generate);
  add("score", "teacher top-k log-probabilities of existing text, as a dataset",
      distill::cli::add_score);
  add("eval", "compare teacher, student and baselines; write report.html",
      distill::cli::add_eval);
  add("prune", "cut a smaller student out of a teacher (layers, heads, channels)",
      distill::cli::add_prune);
  add("sample", "generate text from a model directory", distill::cli::add_sample);
  add("inspect", "print a model directory's config and parameters", distill::cli::add_inspect);
  add("export", "write a model directory as GGUF for llama.cpp", distill::cli::add_export);
  add("import", "read a GGUF model into a model directory", distill::cli::add_import);
  add("tokenizer", "encode and decode text with a tokenizer", distill::cli::add_tokenizer);
  add("serve", "serve a model behind an OpenAI-compatible HTTP API", distill::cli::add_serve);
  add("harvest", "collect a served teacher's outputs (OpenAI-compatible API) as a dataset",
      distill::cli::add_harvest);
  add("detect", "watermark keys; detect a watermark in text or in a model trained on it",
      distill::cli::add_detect);
  add("audit", "flag API accounts that harvest outputs, from the usage store (and simulate)",
      distill::cli::add_audit);
  add("fingerprint", "does a suspect derive from a candidate?", distill::cli::add_fingerprint);
  add("bench", "measure training and generation throughput, GEMM peak (see scripts/bench)",
      distill::cli::add_bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (threads > 0) omp_set_num_threads(threads);
  try {
    for (CLI::App* sub : app.get_subcommands()) {
      if (!verbs.count(sub)) continue;
      static const std::set<std::string> parallel = {"pretrain", "train", "score", "generate"};
      if (distill::dist::size() > 1 && !parallel.count(sub->get_name()))
        throw distill::Error("distill {} runs as one process; under mpirun only pretrain, "
                             "train, score and generate are parallel", sub->get_name());
      return verbs[sub]();
    }
    return 1;
  } catch (const distill::Error& e) {
    return fail(e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    return fail(e.what());
  } catch (const std::bad_alloc&) {
    return fail("out of memory");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  distill::dist::init(&argc, &argv);
  const int code = run(argc, argv);
  distill::dist::finalize();
  return code;
}
