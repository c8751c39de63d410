// `distill fingerprint`: does a suspect model derive from one of the candidate models? Output
// agreement against unrelated control models (forensics/fingerprint.h, docs/fingerprint.md).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "core/error.h"
#include "core/file.h"
#include "distill/teacher_data.h"
#include "eval/task_builder.h"
#include "forensics/fingerprint.h"
#include "forensics/stats.h"

namespace distill::cli {

namespace {

struct FingerprintCliOptions {
  std::string suspect;                 // model directory under test
  std::vector<std::string> candidates; // candidate parents, comma-separated or repeated
  std::vector<std::string> controls;   // models known to be unrelated to the suspect
  std::string prompts;                 // JSONL {"prompt": ...}; empty: drawn from --text
  std::vector<std::string> text = {"build/data/kjv.txt"};  // corpus for the default prompts
  int count = 200;                     // prompts drawn from the corpus
  int context_bytes = 128;             // prompt length in bytes, at most (corpus prompts)
  double val_fraction = 0.05;          // corpus prompts come from this held-out tail
  uint64_t seed = 1;                   // which corpus passages
  int tokens = 32;                     // greedy tokens of the suspect per prompt
  double alpha = 0.05;                 // family-wise level over the candidates
  int batch = 16;                      // prompts decoded (suspect) or scored together
  std::string json;                    // write the full report here
};

std::vector<std::string> prompts_of(const FingerprintCliOptions& o, std::string& source,
                                    std::vector<std::string>& references) {
  std::vector<std::string> prompts;
  if (!o.prompts.empty()) {
    for (const PromptLine& p : read_prompt_file(o.prompts)) {
      if (!p.prompt)
        throw Error("{} line {}: fingerprint prompts must be {{\"prompt\": text}} lines", o.prompts,
                    p.line);
      prompts.push_back(*p.prompt);
    }
    source = o.prompts;
    return prompts;
  }
  for (const std::string& f : o.text)
    if (!file_exists(f))
      throw Error("{}: no such corpus file (the default corpus is made by `bible "
                  "gen1:1-rev22:21 > build/data/kjv.txt`; or pass --text FILE or --prompts FILE)",
                  f);
  NextWordsTaskOptions t;
  t.val_fraction = o.val_fraction;
  t.held_out = true;
  t.count = o.count;
  t.context_bytes = o.context_bytes;
  t.seed = o.seed;
  for (const NextWordsExample& e : make_next_words_task(o.text, t)) {
    prompts.push_back(e.prompt);
    references.push_back(e.next_text);  // to check the controls' capability on the real text
  }
  std::string files;
  for (const std::string& f : o.text) files += (files.empty() ? "" : ",") + f;
  source = fmt::format("{} passages of <= {} bytes from the held-out {} of {} (seed {})",
                       prompts.size(), o.context_bytes, o.val_fraction, files, o.seed);
  return prompts;
}

std::string format_p(double p, double log_p) {
  if (p >= 1e-4) return fmt::format("{:.4f}", p);
  if (p > 0) return fmt::format("{:.2e}", p);
  if (std::isfinite(log_p)) return fmt::format("1e{:.1f}", to_log10(log_p));  // below 1e-308
  return "<1e-308";
}

std::string render_table(const FingerprintReport& r) {
  size_t w = 10;  // the widest model directory
  for (const auto* list : {&r.candidates, &r.controls})
    for (const ModelAgreement& m : *list) w = std::max(w, m.dir.size());
  std::ostringstream s;
  s << fmt::format("suspect {}: {} prompts x {} greedy tokens = {} compared tokens per model\n",
                   r.suspect, r.prompts, r.tokens_per_prompt, r.compared_tokens);
  s << fmt::format("prompts: {}\n\n", r.prompt_source);
  s << fmt::format("{:<10} {:<{}} {:>8} {:>7}\n", "role", "model", w, "agree", "rate");
  auto row = [&](const char* role, const ModelAgreement& m) {
    s << fmt::format("{:<10} {:<{}} {:>8} {:>7.4f}\n", role, m.dir, w, m.agreements, m.rate());
  };
  for (const auto& m : r.candidates) row("candidate", m);
  for (const auto& m : r.controls) row("control", m);
  s << "\nexact one-sided sign test over prompts: the suspect agrees more / less / equally often "
       "with the candidate than with the control\n";
  s << fmt::format("{:<{}} {:<{}} {:>5} {:>5} {:>5} {:>7} {:>10}\n", "candidate", w, "control", w,
                   "more", "less", "ties", "z", "p");
  for (const CandidateVerdict& v : r.verdicts)
    for (const ControlComparison& c : v.controls)
      s << fmt::format("{:<{}} {:<{}} {:>5} {:>5} {:>5} {:>7.2f} {:>10}\n", v.candidate, w,
                       c.control, w, c.test.wins, c.test.losses, c.test.ties, c.test.z,
                       format_p(c.test.p_value, c.test.log_p));
  s << fmt::format("\n{:<{}} {:>10} {:>10}  decision (Holm-Bonferroni over {} candidate(s), "
                   "alpha {})\n",
                   "candidate", w, "max p", "Holm p", r.verdicts.size(), r.alpha);
  for (const CandidateVerdict& v : r.verdicts)
    s << fmt::format("{:<{}} {:>10} {:>10}  {}\n", v.candidate, w, format_p(v.p_value, v.log_p),
                     format_p(v.adjusted_p, std::log(v.adjusted_p)),
                     v.derived ? fmt::format("{} derives from {}{}", r.suspect, v.candidate,
                                             v.warning.empty() ? "" : " (unreliable: see warning)")
                               : std::string("no evidence"));
  for (const CandidateVerdict& v : r.verdicts)
    if (!v.warning.empty()) s << "\nwarning: " << v.warning << "\n";
  return s.str();
}

}  // namespace

VerbRun add_fingerprint(CLI::App& app) {
  auto o = std::make_shared<FingerprintCliOptions>();
  app.add_option("--suspect", o->suspect, "model directory under test")->required();
  app.add_option("--candidates", o->candidates,
                 "candidate parent model directories (comma-separated or repeated)")
      ->required()
      ->delimiter(',');
  app.add_option("--controls", o->controls,
                 "model directories known to be unrelated to the suspect, of comparable "
                 "quality (comma-separated or repeated)")
      ->required()
      ->delimiter(',');
  app.add_option("--prompts", o->prompts,
                 "JSONL prompts, one {\"prompt\": ...} per line (default: --count passages "
                 "of --text)");
  app.add_option("--text", o->text, "corpus for the default prompts (repeatable)");
  app.add_option("--count", o->count, "prompts drawn from the corpus");
  app.add_option("--context-bytes", o->context_bytes, "corpus prompt length in bytes, at most");
  app.add_option("--val-fraction", o->val_fraction,
                 "corpus prompts come from this held-out tail of each file");
  app.add_option("--seed", o->seed, "which corpus passages are drawn");
  app.add_option("--tokens", o->tokens, "greedy tokens of the suspect per prompt (1: the paper's "
                                        "next-token test)");
  app.add_option("--alpha", o->alpha, "family-wise significance level over the candidates");
  app.add_option("--batch", o->batch,
                 "prompts decoded (suspect) or scored (candidates, controls) together");
  app.add_option("--json", o->json, "write the full report (per-prompt counts, tests) here");
  return [o]() {
    FingerprintOptions f;
    f.suspect = o->suspect;
    f.candidates = o->candidates;
    f.controls = o->controls;
    f.prompts = prompts_of(*o, f.prompt_source, f.references);
    f.tokens = o->tokens;
    f.alpha = o->alpha;
    f.batch = o->batch;
    std::fprintf(stderr, "fingerprint: %zu prompts, %zu candidate(s), %zu control(s)\n",
                 f.prompts.size(), f.candidates.size(), f.controls.size());
    std::unique_ptr<ProgressBar> bar;
    std::string stage;
    const FingerprintReport r = run_fingerprint(f, [&](const std::string& s, int done, int total) {
      if (s != stage) {
        if (bar) bar->finish();
        bar = std::make_unique<ProgressBar>(total);
        stage = s;
      }
      bar->update(done, s == "suspect" ? "suspect: greedy continuations" : "scoring " + s);
    });
    if (bar) bar->finish();
    std::printf("%s", render_table(r).c_str());
    if (!o->json.empty()) {
      write_file_atomic(o->json, fingerprint_json(r).dump(2) + "\n");
      std::printf("report: %s\n", o->json.c_str());
    }
    return 0;
  };
}

}  // namespace distill::cli
