#include "forensics/detect.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"
#include "data/dataset.h"
#include "distill/teacher_data.h"
#include "forensics/stats.h"
#include "infer/generator.h"

namespace distill {

namespace {

struct PairHash {
  size_t operator()(const WatermarkTuple& t) const {
    return size_t(t.seed ^ (uint64_t(uint32_t(t.token)) * 0x9e3779b97f4a7c15ull));
  }
};
using PairSet = std::unordered_set<WatermarkTuple, PairHash>;

// Seeds of the windows wholly inside ids[0..end): those that predict positions h..end.
void add_window_seeds(const WatermarkKey& key, const std::vector<int32_t>& ids, size_t end,
                      std::unordered_set<uint64_t>& seeds) {
  WatermarkTuple t;
  for (size_t j = size_t(key.context); j <= std::min(end, ids.size()); j++)
    if (watermark_tuple(key, ids, j, 0, &t)) seeds.insert(t.seed);
}

}  // namespace

DetectionResult score_observations(const WatermarkKey& key, const ObservationSet& set,
                                   const ScoreRules& rules) {
  const bool left = key.seeding == WatermarkSeeding::kLeftHash;
  if (rules.filter_texts && !left)
    throw Error("the training-data filter needs left-hash seeding (the key is {})",
                key.describe());
  std::unordered_set<uint64_t> filter;
  if (rules.filter_texts)
    for (const auto& ids : *rules.filter_texts) add_window_seeds(key, ids, ids.size(), filter);

  DetectionResult r;
  PairSet scored;
  // Per text (observations of a text are contiguous, in increasing position): the prompt's
  // windows or pairs, and the pairs of the text before the current position.
  int32_t current = -1;
  std::unordered_set<uint64_t> prompt_seeds;
  PairSet prompt_pairs, context_pairs;
  size_t context_upto = 0;
  for (const Observation& o : set.obs) {
    const TokenText& text = set.texts[size_t(o.text)];
    if (o.text != current) {
      current = o.text;
      prompt_seeds.clear();
      prompt_pairs.clear();
      context_pairs.clear();
      context_upto = 0;
      if (rules.skip_prompt_windows) {
        const size_t end = size_t(std::max(text.first_scored, 0));
        if (left) {
          add_window_seeds(key, text.ids, end, prompt_seeds);
        } else {
          WatermarkTuple t;
          for (size_t j = 0; j < end && j < text.ids.size(); j++)
            if (watermark_tuple(key, text.ids, j, -1, &t)) prompt_pairs.insert(t);
        }
      }
    }
    r.observations++;
    WatermarkTuple t;
    if (!watermark_tuple(key, text.ids, size_t(o.pos), o.token, &t)) {
      r.too_early++;
      continue;
    }
    if (rules.skip_context_pairs) {
      for (; context_upto < size_t(o.pos); context_upto++) {
        WatermarkTuple c;
        if (watermark_tuple(key, text.ids, context_upto, -1, &c)) context_pairs.insert(c);
      }
      if (context_pairs.count(t)) {
        r.context_skipped++;
        continue;
      }
    }
    if (rules.skip_prompt_windows && (left ? prompt_seeds.count(t.seed) > 0
                                           : prompt_pairs.count(t) > 0)) {
      r.prompt_skipped++;
      continue;
    }
    if (rules.filter_texts && !filter.count(t.seed)) {
      r.filtered++;
      continue;
    }
    if (rules.dedup && !scored.insert(t).second) {
      r.duplicates++;
      continue;
    }
    r.scored++;
    if (key.scheme == WatermarkScheme::kKirchenbauer) {
      r.green += is_green(key, t);
    } else {
      r.score += -std::log1p(-aaronson_r(key, t));
    }
  }
  const double T = double(r.scored);
  if (key.scheme == WatermarkScheme::kKirchenbauer) {
    r.test = fmt::format("exact binomial tail P(X >= G), X ~ Binomial(T, gamma={})", key.gamma);
    r.score = double(r.green);
    r.expected = key.gamma * T;
    const double sd = std::sqrt(T * key.gamma * (1.0 - key.gamma));
    r.z = sd > 0 ? (r.score - r.expected) / sd : 0.0;
    r.ln_p = log_binomial_sf(r.green, r.scored, key.gamma);
  } else {
    r.test = "exact gamma tail P(X >= S), X ~ Gamma(T, 1), S = sum of -ln(1 - r)";
    r.expected = T;
    r.z = T > 0 ? (r.score - T) / std::sqrt(T) : 0.0;
    r.ln_p = T > 0 ? log_gamma_sf(T, r.score) : 0.0;
  }
  return r;
}

ObservationSet text_observations(std::vector<TokenText> texts) {
  ObservationSet set;
  set.texts = std::move(texts);
  for (size_t i = 0; i < set.texts.size(); i++) {
    const TokenText& t = set.texts[i];
    for (size_t pos = size_t(std::max(t.first_scored, 0)); pos < t.ids.size(); pos++)
      set.obs.push_back({int32_t(i), int32_t(pos), t.ids[pos]});
  }
  return set;
}

ObservationSet open_model_observations(
    Model& suspect, std::vector<TokenText> texts,
    const std::function<void(int64_t, int64_t)>& progress, int vocab_limit) {
  const int context = suspect.config().max_position;
  if (context < 2) throw Error("the suspect's context ({} positions) is too short", context);
  Generator gen(suspect, 1, context);
  const int V = suspect.config().vocab_size;
  ObservationSet set;
  set.texts = std::move(texts);
  int64_t total = 0, done = 0;
  for (const TokenText& t : set.texts) total += int64_t(t.ids.size());
  for (size_t i = 0; i < set.texts.size(); i++) {
    const TokenText& t = set.texts[i];
    for (int32_t id : t.ids)
      if (id < 0 || id >= V)
        throw Error("text {}: token id {} is outside the suspect's vocabulary of {}", t.id, id, V);
    // Windows of `context` tokens overlapping by one, so every position from 1 on is predicted.
    for (size_t begin = 0; begin + 1 < t.ids.size(); begin += size_t(context - 1)) {
      const size_t end = std::min(t.ids.size(), begin + size_t(context));
      const std::vector<int32_t> window(t.ids.begin() + long(begin), t.ids.begin() + long(end));
      const std::vector<TokenLogprobs> lp = gen.score(window, 1, vocab_limit);
      for (size_t j = 0; j < lp.size(); j++) {
        const size_t pos = begin + j + 1;
        if (pos < size_t(t.first_scored) || lp[j].top_ids.empty()) continue;
        set.obs.push_back({int32_t(i), int32_t(pos), lp[j].top_ids[0]});
      }
      if (end == t.ids.size()) break;
    }
    done += int64_t(t.ids.size());
    if (progress) progress(done, total);
  }
  return set;
}

ObservationSet closed_model_observations(Model& suspect, const std::vector<TokenText>& prompts,
                                         const ClosedModelOptions& o,
                                         const std::function<void(int64_t, int64_t)>& progress) {
  const int context = suspect.config().max_position;
  if (o.max_tokens < 1 || o.max_tokens >= context)
    throw Error("--max-new-tokens must be in 1..{} (the suspect's context is {})", context - 1,
                context);
  const int V = suspect.config().vocab_size;
  std::vector<std::vector<int32_t>> inputs;
  for (const TokenText& p : prompts) {
    if (p.ids.empty()) throw Error("prompt {} is empty", p.id);
    for (int32_t id : p.ids)
      if (id < 0 || id >= V)
        throw Error("prompt {}: token id {} is outside the suspect's vocabulary of {}", p.id, id, V);
    // Keep the prompt's tail so prompt + completion fits the context.
    const size_t keep = std::min(p.ids.size(), size_t(context - o.max_tokens));
    inputs.emplace_back(p.ids.end() - long(keep), p.ids.end());
  }
  GenerateOptions go;
  go.sampling = SamplingOptions{o.temperature, 0, 1.0f, 0.0f};
  go.sampling.vocab_limit = o.vocab_limit;
  go.max_tokens = o.max_tokens;
  go.seed = o.seed;
  go.stop_ids = o.stop_ids;
  Generator gen(suspect, std::max(1, o.batch), context);
  const std::vector<Generation> out =
      gen.generate(inputs, go, nullptr, [&](int done, int total, int64_t) {
        if (progress) progress(done, total);
      });
  ObservationSet set;
  for (size_t i = 0; i < inputs.size(); i++) {
    TokenText t;
    t.id = prompts[i].id;
    t.ids = inputs[i];
    t.first_scored = int32_t(inputs[i].size());
    t.ids.insert(t.ids.end(), out[i].tokens.begin(), out[i].tokens.end());
    for (size_t pos = size_t(t.first_scored); pos < t.ids.size(); pos++)
      set.obs.push_back({int32_t(i), int32_t(pos), t.ids[pos]});
    set.texts.push_back(std::move(t));
  }
  return set;
}

Calibration calibrate(const WatermarkKey& key, const ObservationSet& set, const ScoreRules& rules,
                      int keys, uint64_t seed) {
  Calibration c;
  double scored = 0.0;
  for (int i = 0; i < keys; i++) {
    const uint64_t s = seed + uint64_t(i) * 0x9e3779b97f4a7c15ull;
    const DetectionResult r = score_observations(with_new_secret(key, &s), set, rules);
    const double p = std::exp(r.ln_p);
    c.p_values.push_back(p);
    c.below_001 += p <= 0.01;
    c.below_005 += p <= 0.05;
    scored += double(r.scored);
  }
  const KsResult ks = ks_uniform(c.p_values);
  c.ks_d = ks.d;
  c.ks_p = ks.p_value;
  c.mean_scored = keys > 0 ? scored / keys : 0.0;
  return c;
}

std::vector<TokenText> read_texts(
    const std::string& path, const std::function<std::vector<int32_t>(const std::string&)>& encode,
    bool per_line) {
  namespace fs = std::filesystem;
  std::vector<TokenText> out;
  if (fs::is_directory(path)) {
    const DatasetReader reader = DatasetReader::open(path);
    DatasetEntry e;
    for (int64_t i = 0; i < reader.size(); i++) {
      reader.read(i, e);
      const nlohmann::json j = reader.record_json(i);
      TokenText t;
      t.id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>()
                                                       : fmt::format("record:{}", i);
      if (j.value("sample", 0) > 0) t.id += fmt::format("#{}", j.value("sample", 0));
      t.ids = e.tokens;
      t.first_scored = e.prompt_tokens;
      out.push_back(std::move(t));
    }
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("{}: cannot open", path);
  const bool jsonl = path.size() >= 6 && path.substr(path.size() - 6) == ".jsonl";
  std::string line;
  int64_t n = 0;
  if (!jsonl && !per_line) {
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    out.push_back({path, encode(all), 0});
    return out;
  }
  while (std::getline(in, line)) {
    n++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!jsonl) {
      out.push_back({fmt::format("line:{}", n), encode(line), 0});
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw Error("{} line {}: not JSON: {}", path, n, e.what());
    }
    if (!j.is_object()) throw Error("{} line {}: expected a JSON object", path, n);
    const char* field = j.contains("completion") ? "completion" : "text";
    if (!j.contains(field) || !j[field].is_string())
      throw Error("{} line {}: needs a string \"completion\" or \"text\"", path, n);
    if (j.contains("prompt") && !j["prompt"].is_string())
      throw Error("{} line {}: \"prompt\" must be a string", path, n);
    TokenText t;
    t.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                            : fmt::format("line:{}", n);
    if (j.contains("prompt")) t.ids = encode(j["prompt"].get<std::string>());
    t.first_scored = int32_t(t.ids.size());
    const std::vector<int32_t> body = encode(j[field].get<std::string>());
    t.ids.insert(t.ids.end(), body.begin(), body.end());
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<TokenText> read_prompts(
    const std::string& path, const std::function<std::vector<int32_t>(const std::string&)>& encode) {
  std::vector<TokenText> out;
  const bool jsonl = path.size() >= 6 && path.substr(path.size() - 6) == ".jsonl";
  if (!jsonl) {
    out = read_texts(path, encode, true);
  } else {
    for (const PromptLine& p : read_prompt_file(path)) {
      if (!p.prompt)
        throw Error("{} line {}: the closed-model test takes \"prompt\" lines, not chat "
                    "\"messages\"", path, p.line);
      out.push_back({p.id, encode(*p.prompt), 0});
    }
  }
  for (TokenText& t : out) t.first_scored = int32_t(t.ids.size());
  return out;
}

}  // namespace distill
