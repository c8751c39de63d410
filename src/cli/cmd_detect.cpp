// distill detect: keygen (a watermark key file), text (is this text watermarked with the key),
// model (was this model trained on text watermarked with the key: radioactivity, open and closed
// tests, with a random-key calibration).
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/progress.h"
#include "cli/verbs.h"
#include "core/error.h"
#include "core/file.h"
#include "data/dataset.h"
#include "formats/model_dir.h"
#include "forensics/detect.h"
#include "forensics/watermark.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill::cli {

namespace {

struct KeygenOptions {
  std::string out;
  std::string scheme = "kirchenbauer", seeding = "left-hash";
  double gamma = 0.25, delta = 2.0;
  int context = 1;
  int64_t secret_seed = -1;
};

struct TextOptions {
  std::string key, tokenizer, json;
  std::vector<std::string> inputs;
  bool per_line = false, no_dedup = false, per_text = true;
  double threshold_z = 4.0;
};

struct ModelOptions {
  std::string suspect, key, mode = "open", text, prompts, filter, json;
  int max_new_tokens = 128, batch = 8, calibrate = 0;
  float temperature = 1.0f;
  uint64_t seed = 0;
  bool no_dedup = false, no_skip = false;
};

nlohmann::json result_json(const DetectionResult& r) {
  return {{"test", r.test},
          {"observations", r.observations},
          {"too_early", r.too_early},
          {"duplicates", r.duplicates},
          {"prompt_skipped", r.prompt_skipped},
          {"context_skipped", r.context_skipped},
          {"filtered", r.filtered},
          {"scored", r.scored},
          {"green", r.green},
          {"score", r.score},
          {"expected", r.expected},
          {"z", r.z},
          {"log10_p", std::isfinite(r.ln_p) ? nlohmann::json(r.log10_p()) : nlohmann::json("-inf")},
          {"p", std::exp(r.ln_p)}};
}

std::string p_text(const DetectionResult& r) {
  if (r.ln_p > std::log(1e-4)) return fmt::format("{:.4g}", std::exp(r.ln_p));
  return fmt::format("1e{:.1f}", r.log10_p());
}

void print_result(const char* what, const DetectionResult& r, const WatermarkKey& key) {
  std::printf("%s: %s\n", what, key.describe().c_str());
  std::printf("  tokens offered %lld; not scored: %lld too early, %lld duplicate pairs",
              (long long)r.observations, (long long)r.too_early, (long long)r.duplicates);
  if (r.prompt_skipped) std::printf(", %lld windows from the prompt", (long long)r.prompt_skipped);
  if (r.context_skipped)
    std::printf(", %lld pairs already in the input", (long long)r.context_skipped);
  if (r.filtered) std::printf(", %lld windows not in the filter data", (long long)r.filtered);
  std::printf("\n");
  if (key.scheme == WatermarkScheme::kKirchenbauer)
    std::printf("  scored T=%lld  green G=%lld (%.1f%%, expected %.1f)  z=%.2f  p=%s\n",
                (long long)r.scored, (long long)r.green,
                r.scored ? 100.0 * double(r.green) / double(r.scored) : 0.0, r.expected, r.z,
                p_text(r).c_str());
  else
    std::printf("  scored T=%lld  S=%.1f (expected %.1f)  z=%.2f  p=%s\n", (long long)r.scored,
                r.score, r.expected, r.z, p_text(r).c_str());
  std::printf("  test: %s\n", r.test.c_str());
}

void write_json(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  write_file_atomic(path, j.dump(1) + "\n");
  std::printf("wrote %s\n", path.c_str());
}

std::function<void(int64_t, int64_t)> bar_progress(std::shared_ptr<ProgressBar>& bar,
                                                   const char* what) {
  return [&bar, what](int64_t done, int64_t total) {
    if (!bar) bar = std::make_shared<ProgressBar>(long(total));
    bar->update(long(done), fmt::format("{} {}/{}", what, done, total));
    if (done == total) bar->finish();
  };
}

int run_keygen(const KeygenOptions& o) {
  WatermarkKey k;
  if (o.scheme == "kirchenbauer") k.scheme = WatermarkScheme::kKirchenbauer;
  else if (o.scheme == "aaronson") k.scheme = WatermarkScheme::kAaronson;
  else throw Error("--scheme must be kirchenbauer or aaronson, got \"{}\"", o.scheme);
  if (o.seeding == "left-hash") k.seeding = WatermarkSeeding::kLeftHash;
  else if (o.seeding == "self-hash") k.seeding = WatermarkSeeding::kSelfHash;
  else throw Error("--seeding must be left-hash or self-hash, got \"{}\"", o.seeding);
  k.gamma = o.gamma;
  k.delta = o.delta;
  k.context = o.context;
  if (o.secret_seed >= 0) {
    const uint64_t seed = uint64_t(o.secret_seed);
    k = with_new_secret(k, &seed);
  } else {
    k = with_new_secret(k);
  }
  save_watermark_key(k, o.out);
  std::printf("watermark key (%s) written to %s (mode 0600: keep it secret)\n",
              k.describe().c_str(), o.out.c_str());
  return 0;
}

int run_text(const TextOptions& o) {
  const WatermarkKey key = load_watermark_key(o.key);
  std::unique_ptr<Tokenizer> tok;
  auto encode = [&](const std::string& s) {
    if (!tok) {
      if (o.tokenizer.empty())
        throw Error("text input needs --tokenizer (the watermarked model's directory)");
      tok = load_model_tokenizer(o.tokenizer);
    }
    return tok->encode(s);
  };
  std::vector<TokenText> texts;
  for (const std::string& in : o.inputs) {
    std::vector<TokenText> t = read_texts(in, encode, o.per_line);
    texts.insert(texts.end(), std::make_move_iterator(t.begin()), std::make_move_iterator(t.end()));
  }
  if (texts.empty()) throw Error("no texts in {}", fmt::join(o.inputs, ", "));
  ScoreRules rules;
  rules.dedup = !o.no_dedup;
  nlohmann::json out = {{"key", key.describe()}, {"dedup", rules.dedup}};
  int64_t flagged = 0;
  if (o.per_text) {
    std::printf("%-24s %8s %8s %8s %8s %10s\n", "text", "tokens", "scored",
                key.scheme == WatermarkScheme::kKirchenbauer ? "green" : "score", "z", "p");
    nlohmann::json rows = nlohmann::json::array();
    for (const TokenText& t : texts) {
      const DetectionResult r = score_observations(key, text_observations({t}), rules);
      flagged += r.z >= o.threshold_z;
      if (texts.size() <= 200)
        std::printf("%-24s %8zu %8lld %8.1f %8.2f %10s\n", t.id.substr(0, 24).c_str(),
                    t.ids.size() - size_t(t.first_scored), (long long)r.scored, r.score, r.z,
                    p_text(r).c_str());
      nlohmann::json row = result_json(r);
      row["id"] = t.id;
      rows.push_back(row);
    }
    out["texts"] = rows;
    out["threshold_z"] = o.threshold_z;
    out["flagged"] = flagged;
    std::printf("%lld of %zu texts at z >= %.1f\n", (long long)flagged, texts.size(),
                o.threshold_z);
  }
  const DetectionResult pooled = score_observations(key, text_observations(texts), rules);
  print_result("pooled over all texts", pooled, key);
  out["pooled"] = result_json(pooled);
  write_json(o.json, out);
  return 0;
}

int run_model(const ModelOptions& o) {
  const WatermarkKey key = load_watermark_key(o.key);
  std::unique_ptr<Model> suspect = load_model_dir(o.suspect);
  auto tok = load_model_tokenizer(o.suspect);
  // Datasets carry token ids: they must be the suspect's tokenizer's.
  for (const std::string& dir : {o.text, o.filter})
    if (!dir.empty() && std::filesystem::is_directory(dir))
      try {
        DatasetReader::open(dir).check_compatible(tok->fingerprint(),
                                                  suspect->config().vocab_size);
      } catch (const Error& e) {
        throw Error("{} (the suspect {} must use the dataset's tokenizer)", e.what(), o.suspect);
      }
  auto encode = [&](const std::string& s) { return tok->encode(s); };
  ScoreRules rules;
  rules.dedup = !o.no_dedup;
  ObservationSet set;
  std::vector<std::vector<int32_t>> filter;
  std::shared_ptr<ProgressBar> bar;
  if (o.mode == "open") {
    if (o.text.empty()) throw Error("--mode open needs --text (watermarked text to feed it)");
    set = open_model_observations(*suspect, read_texts(o.text, encode, false),
                                  bar_progress(bar, "tokens read"), tok->vocab_size());
    rules.skip_context_pairs = !o.no_skip;
  } else if (o.mode == "closed") {
    if (o.prompts.empty()) throw Error("--mode closed needs --prompts");
    ClosedModelOptions c;
    c.max_tokens = o.max_new_tokens;
    c.temperature = o.temperature;
    c.seed = o.seed;
    c.batch = o.batch;
    c.vocab_limit = tok->vocab_size();  // a padded vocabulary's padding has no text
    if (const auto eos = tok->eos_id()) c.stop_ids.push_back(*eos);
    const std::vector<TokenText> prompts = read_prompts(o.prompts, encode);
    set = closed_model_observations(*suspect, prompts, c, bar_progress(bar, "prompts completed"));
    rules.skip_prompt_windows = !o.no_skip;
  } else {
    throw Error("--mode must be open or closed, got \"{}\"", o.mode);
  }
  if (!o.filter.empty()) {
    for (TokenText& t : read_texts(o.filter, encode, false)) filter.push_back(std::move(t.ids));
    rules.filter_texts = &filter;
  }
  const DetectionResult r = score_observations(key, set, rules);
  print_result(fmt::format("{} model test of {}", o.mode, o.suspect).c_str(), r, key);
  nlohmann::json out = {{"suspect", o.suspect}, {"mode", o.mode}, {"key", key.describe()},
                        {"dedup", rules.dedup}, {"result", result_json(r)}};
  if (o.calibrate > 0) {
    const Calibration c = calibrate(key, set, rules, o.calibrate, o.seed ^ 0x5ca1ab1eull);
    std::printf("calibration: %d random keys, %.0f pairs scored per test: p <= 0.01 in %lld "
                "(%.1f%%), p <= 0.05 in %lld (%.1f%%); KS against uniform D=%.3f p=%.3g\n",
                o.calibrate, c.mean_scored, (long long)c.below_001,
                100.0 * double(c.below_001) / o.calibrate, (long long)c.below_005,
                100.0 * double(c.below_005) / o.calibrate, c.ks_d, c.ks_p);
    out["calibration"] = {{"keys", o.calibrate},         {"mean_scored", c.mean_scored},
                          {"below_0.01", c.below_001},  {"below_0.05", c.below_005},
                          {"ks_d", c.ks_d},             {"ks_p", c.ks_p},
                          {"p_values", c.p_values}};
  }
  write_json(o.json, out);
  return 0;
}

}  // namespace

VerbRun add_detect(CLI::App& app) {
  app.require_subcommand(1);
  auto mode = std::make_shared<int>(0);
  auto k = std::make_shared<KeygenOptions>();
  CLI::App* keygen = app.add_subcommand("keygen", "write a new watermark key file");
  keygen->add_option("--out", k->out, "key file to write")->required();
  keygen->add_option("--scheme", k->scheme, "kirchenbauer (green list) or aaronson (Gumbel)");
  keygen->add_option("--seeding", k->seeding, "left-hash or self-hash (min-hash, context >= 2)");
  keygen->add_option("--gamma", k->gamma, "kirchenbauer: green fraction of the vocabulary");
  keygen->add_option("--delta", k->delta, "kirchenbauer: logit bias added to green tokens");
  keygen->add_option("--context", k->context, "h: previous tokens the green list depends on");
  keygen->add_option("--secret-seed", k->secret_seed,
                     "derive the secret from this seed (reproducible studies and tests only; "
                     "-1: from the OS)");
  keygen->callback([mode] { *mode = 1; });

  auto t = std::make_shared<TextOptions>();
  CLI::App* text = app.add_subcommand("text", "is this text watermarked with the key");
  text->add_option("inputs", t->inputs,
                   "dataset directories, .jsonl (\"completion\" or \"text\", optional \"prompt\", "
                   "\"id\") or plain text files")
      ->required();
  text->add_option("--key", t->key, "watermark key file")->required();
  text->add_option("--tokenizer", t->tokenizer, "model directory whose tokenizer encodes text");
  text->add_flag("--lines", t->per_line, "plain text: one text per line (else one per file)");
  text->add_option("--threshold-z", t->threshold_z, "z at which a text counts as watermarked");
  text->add_flag("--no-dedup", t->no_dedup,
                 "score repeated (window, token) pairs every time (breaks the exact null)");
  text->add_option("--json", t->json, "write every statistic to this JSON file");
  text->callback([mode] { *mode = 2; });

  auto m = std::make_shared<ModelOptions>();
  CLI::App* model =
      app.add_subcommand("model", "was a model trained on text watermarked with the key");
  model->add_option("--suspect", m->suspect, "suspect model directory")->required();
  model->add_option("--key", m->key, "watermark key file")->required();
  model->add_option("--mode", m->mode,
                    "open: score the suspect's top-1 predictions on --text; closed: score its "
                    "completions of --prompts");
  model->add_option("--text", m->text, "open: watermarked text (dataset dir, .jsonl or text)");
  model->add_option("--prompts", m->prompts, "closed: prompts (.jsonl or one per line)");
  model->add_option("--filter", m->filter,
                    "closed/open: score only windows that occur in this watermarked data");
  model->add_option("--max-new-tokens", m->max_new_tokens, "closed: tokens per completion");
  model->add_option("--temperature", m->temperature, "closed: sampling temperature");
  model->add_option("--batch", m->batch, "closed: sequences decoded together");
  model->add_option("--seed", m->seed, "closed: sampling seed; calibration key seed");
  model->add_option("--calibrate", m->calibrate,
                    "also run the test under this many random keys and report uniformity");
  model->add_flag("--no-dedup", m->no_dedup,
                  "score repeated (window, token) pairs every time (breaks the exact null)");
  model->add_flag("--no-skip", m->no_skip,
                  "keep pairs the suspect could copy from its input (prompt windows, earlier "
                  "pairs of the text)");
  model->add_option("--json", m->json, "write every statistic (and calibration p-values)");
  model->callback([mode] { *mode = 3; });

  return [mode, k, t, m]() {
    if (*mode == 1) return run_keygen(*k);
    if (*mode == 2) return run_text(*t);
    return run_model(*m);
  };
}

}  // namespace distill::cli
