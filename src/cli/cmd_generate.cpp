// `distill generate` and `distill score`: teacher data as a dataset directory.
#include <fmt/format.h>

#include <memory>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "distill/teacher_data.h"

namespace distill::cli {
namespace {

// Progress: records done/total, teacher tokens/s, ETA; resume notes on their own line.
TeacherDataProgressFn display(std::shared_ptr<std::unique_ptr<ProgressBar>> bar) {
  return [bar](const TeacherDataProgress& p) {
    if (!*bar) *bar = std::make_unique<ProgressBar>(long(p.total));
    if (!p.note.empty()) {
      (*bar)->print(p.note);
      return;
    }
    (*bar)->update(long(p.done), fmt::format("records {}/{}  {} tok/s  ETA {}", p.done, p.total,
                                             format_count(p.tokens_per_s),
                                             format_duration(p.eta_s)));
    if (p.done == p.total) (*bar)->finish();
  };
}

}  // namespace

VerbRun add_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateDataOptions>();
  app.add_option("--teacher", o->teacher, "teacher model directory")->required();
  app.add_option("--prompts", o->prompts,
                 "JSONL prompts: {\"prompt\": ...} or {\"messages\": [...]}, optional \"id\"")
      ->required();
  app.add_option("--out", o->out, "dataset directory")->required();
  app.add_option("--num-samples", o->num_samples, "completions per prompt");
  app.add_option("--max-tokens", o->max_tokens, "new tokens per completion");
  app.add_option("--temperature", o->temperature, "sampling temperature (0: greedy)");
  app.add_option("--top-p", o->top_p, "nucleus sampling mass");
  app.add_option("--top-k-sampling", o->top_k_sampling, "sample from the k most likely (0: all)");
  app.add_option("--min-p", o->min_p, "drop tokens below min-p x the top probability");
  app.add_option("--seed", o->seed, "sampling seed");
  app.add_option("--top-k", o->top_k, "teacher log-probabilities stored per token");
  app.add_option("--batch", o->batch, "sequences decoded together");
  app.add_option("--stop", o->stop, "stop strings (repeatable)");
  app.add_option("--encoding", o->encoding, "log-probability encoding: compact or exact");
  app.add_flag("--resume", o->resume, "continue an interrupted dataset");
  add_weights_option(app, o->weights, "--weights", "the teacher");
  app.add_option("--watermark", o->watermark,
                 "watermark key file (distill detect keygen): watermark the completions");
  return [o]() {
    generate_data(*o, display(std::make_shared<std::unique_ptr<ProgressBar>>()));
    std::printf("dataset written to %s\n", o->out.c_str());
    return 0;
  };
}

VerbRun add_score(CLI::App& app) {
  auto o = std::make_shared<ScoreOptions>();
  app.add_option("--teacher", o->teacher, "teacher model directory")->required();
  app.add_option("--text", o->text, "text files (windows) or .jsonl with \"text\"")->required();
  app.add_option("--out", o->out, "dataset directory")->required();
  app.add_option("--top-k", o->top_k, "teacher log-probabilities stored per position");
  app.add_option("--seq-len", o->seq_len, "tokens per window of a text file");
  app.add_option("--val-fraction", o->val_fraction, "tail of each text file left out (held out)");
  app.add_option("--max-records", o->max_records, "score at most this many windows, spread evenly over the text (0: all)");
  app.add_option("--encoding", o->encoding, "log-probability encoding: compact or exact");
  app.add_flag("--resume", o->resume, "continue an interrupted dataset");
  add_weights_option(app, o->weights, "--weights", "the teacher");
  return [o]() {
    score_text(*o, display(std::make_shared<std::unique_ptr<ProgressBar>>()));
    std::printf("dataset written to %s\n", o->out.c_str());
    return 0;
  };
}

}  // namespace distill::cli
