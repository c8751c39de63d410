// `distill harvest`: a served teacher's outputs as a dataset (src/harvest/harvest.h).
#include <fmt/format.h>

#include <memory>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "harvest/harvest.h"

namespace distill::cli {
namespace {

std::string status_line(const harvest::HarvestProgress& p) {
  std::string errors;
  for (const auto& [kind, n] : p.errors) errors += fmt::format(" {}:{}", kind, n);
  return fmt::format("{}/{}  {:.1f} req/s  {} tok/s  errors{}{}  {}  ETA {}", p.done, p.total,
                     p.requests_per_s, format_count(p.tokens_per_s), errors.empty() ? " 0" : errors,
                     p.failed ? fmt::format("  failed {}", p.failed) : "",
                     p.priced ? fmt::format("${:.4f}", p.cost) : "cost n/a",
                     format_duration(p.eta_s));
}

}  // namespace

VerbRun add_harvest(CLI::App& app) {
  auto o = std::make_shared<harvest::HarvestOptions>();
  auto seed = std::make_shared<int64_t>(-1);
  app.add_option("--endpoint", o->endpoint,
                 "base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
      ->required();
  app.add_option("--model", o->model, "model name sent to the endpoint")->required();
  app.add_option("--prompts", o->prompts,
                 "JSONL prompts: {\"prompt\": ...} or {\"messages\": [...]}, optional \"id\"")
      ->required();
  app.add_option("--out", o->out, "dataset directory (a rerun resumes it)")->required();
  app.add_option("--mode", o->mode, "chat (/chat/completions) or completions");
  app.add_option("--api-key-env", o->api_key_env,
                 "environment variable holding the API key (never a flag)");
  app.add_option("--tokenizer", o->tokenizer,
                 "local tokenizer (model dir or tokenizer file) the teacher's tokens are mapped "
                 "onto (default: byte-level)");
  app.add_option("--concurrency", o->concurrency, "requests in flight");
  app.add_option("--rpm", o->rpm, "requests per minute (0: no limit)");
  app.add_option("--tpm", o->tpm, "tokens (prompt + max completion) per minute (0: no limit)");
  app.add_option("--max-tokens", o->max_tokens, "completion tokens per prompt");
  app.add_option("--temperature", o->temperature, "sampling temperature");
  app.add_option("--top-p", o->top_p, "nucleus sampling mass");
  app.add_option("--seed", *seed, "per-prompt seed base (-1: none sent)");
  app.add_option("--top-logprobs", o->top_logprobs, "alternatives per token (1-20), stored as k");
  app.add_option("--retries", o->retries, "retries per prompt after the first attempt");
  app.add_option("--backoff", o->backoff_base_s,
                 "first retry delay in seconds (doubles, jittered)");
  app.add_option("--backoff-max", o->backoff_max_s, "longest retry delay in seconds");
  app.add_option("--timeout", o->timeout_s, "seconds per request");
  app.add_option("--max-cost", o->max_cost, "spend cap in dollars (0: none); needs a price");
  app.add_option("--pricing", o->pricing,
                 "pricing table JSON: {\"model\": {\"input\": $/Mtok, \"output\": $/Mtok}}");
  app.add_option("--price-input", o->price_input, "dollars per million prompt tokens");
  app.add_option("--price-output", o->price_output, "dollars per million completion tokens");
  app.add_option("--encoding", o->encoding, "log-probability encoding: compact or exact");
  return [o, seed]() {
    if (*seed >= 0) o->seed = uint64_t(*seed);
    auto bar = std::make_shared<std::unique_ptr<ProgressBar>>();
    const harvest::HarvestSummary s =
        harvest::run_harvest(*o, [bar](const harvest::HarvestProgress& p) {
          if (!*bar) *bar = std::make_unique<ProgressBar>(long(p.total));
          if (!p.note.empty()) {
            (*bar)->print(p.note);
            return;
          }
          (*bar)->update(long(p.done), status_line(p));
        });
    if (*bar) (*bar)->finish();
    std::printf("harvested %lld/%lld prompts into %s%s\n", (long long)s.done, (long long)s.total,
                o->out.c_str(), s.cost > 0 ? fmt::format(", spent ${:.4f}", s.cost).c_str() : "");
    if (s.stopped_by_cost) {
      std::fprintf(stderr,
                   "error: harvest: stopped at the spend cap of $%.4f with %lld prompts "
                   "left\n",
                   o->max_cost, (long long)(s.total - s.done));
      return 1;
    }
    if (s.failed > 0 || s.done < s.total) {
      std::fprintf(stderr,
                   "error: harvest: %lld prompts failed after %d retries; run the same "
                   "command again to retry them\n",
                   (long long)(s.total - s.done), o->retries);
      return 1;
    }
    return 0;
  };
}

}  // namespace distill::cli
