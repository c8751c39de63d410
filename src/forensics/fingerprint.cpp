#include "forensics/fingerprint.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include "core/error.h"
#include "forensics/stats.h"
#include "formats/model_dir.h"
#include "infer/generator.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill {

SignTest sign_test(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  if (a.size() != b.size())
    throw Error("[sign_test] paired samples differ in length: {} vs {}", a.size(), b.size());
  SignTest t;
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i] > b[i]) t.wins++;
    else if (a[i] < b[i]) t.losses++;
    else t.ties++;
  }
  const int64_t n = t.wins + t.losses;
  if (n > 0) {
    t.z = (double(t.wins) - 0.5 * double(n)) / std::sqrt(0.25 * double(n));
    t.log_p = log_binomial_sf(t.wins, n, 0.5);
  }
  t.p_value = std::exp(t.log_p);
  return t;
}

void fingerprint_decide(FingerprintReport& r) {
  if (r.candidates.empty()) throw Error("fingerprint: no candidate models");
  if (r.controls.empty()) throw Error("fingerprint: no control models");
  auto check_length = [&](const ModelAgreement& m) {
    if (int64_t(m.per_prompt.size()) != r.prompts)
      throw Error("fingerprint: {} has agreements for {} prompts, expected {}", m.dir,
                  m.per_prompt.size(), r.prompts);
  };
  for (const auto& m : r.candidates) check_length(m);
  for (const auto& m : r.controls) check_length(m);
  r.verdicts.clear();
  std::vector<double> p;
  for (const ModelAgreement& cand : r.candidates) {
    CandidateVerdict v;
    v.candidate = cand.dir;
    v.log_p = -std::numeric_limits<double>::infinity();
    for (const ModelAgreement& ctrl : r.controls) {
      ControlComparison c{ctrl.dir, sign_test(cand.per_prompt, ctrl.per_prompt)};
      // Intersection-union: H0 holds when S agrees with A no more than with ANY one control, so
      // A is attributed only when every control-wise test rejects; the level-alpha test of the
      // union is "max p <= alpha" (Berger 1982), with no multiplicity correction needed.
      if (c.test.log_p > v.log_p) {
        v.log_p = c.test.log_p;
        v.weakest_control = ctrl.dir;
      }
      v.controls.push_back(std::move(c));
    }
    v.p_value = std::exp(v.log_p);
    p.push_back(v.p_value);
    r.verdicts.push_back(std::move(v));
  }
  const std::vector<double> adjusted = holm_adjust(p);
  for (size_t i = 0; i < r.verdicts.size(); i++) {
    r.verdicts[i].adjusted_p = adjusted[i];
    r.verdicts[i].derived = adjusted[i] <= r.alpha;
  }
}

namespace {

// The suspect's prompts as ids, and the greedy continuation of each.
struct SuspectOutputs {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> continuations;
};

void check_context(const std::string& dir, const Model& model, size_t longest_prompt,
                   int tokens) {
  if (int64_t(longest_prompt) + tokens > model.config().max_position)
    throw Error("{}: the longest prompt ({} tokens) + {} tokens exceeds its context of {}; use "
                "shorter prompts or fewer --tokens",
                dir, longest_prompt, tokens, model.config().max_position);
}

SuspectOutputs suspect_outputs(const FingerprintOptions& o, const Tokenizer& tok,
                               const FingerprintProgress& progress) {
  SuspectOutputs out;
  size_t longest_prompt = 0;
  for (size_t i = 0; i < o.prompts.size(); i++) {
    std::vector<int32_t> ids = tok.encode(o.prompts[i]);
    if (ids.empty())
      throw Error("prompt {} ({}) encodes to no tokens", i + 1,
                  nlohmann::json(o.prompts[i]).dump());
    longest_prompt = std::max(longest_prompt, ids.size());
    out.prompts.push_back(std::move(ids));
  }
  std::unique_ptr<Model> model = load_model_dir(o.suspect);
  check_context(o.suspect, *model, longest_prompt, o.tokens);
  GenerateOptions g;
  g.sampling = SamplingOptions{0.0f, 0, 1.0f, 0.0f};  // greedy, as in the paper
  g.max_tokens = o.tokens;                            // no stop tokens: every prompt gets them all
  g.sampling.vocab_limit = tok.vocab_size();          // a padded vocabulary's padding has no text
  Generator gen(*model, std::max(1, std::min<int>(o.batch, int(out.prompts.size()))),
                int(longest_prompt) + o.tokens);
  const std::vector<Generation> gens =
      gen.generate(out.prompts, g, nullptr, [&](int done, int total, int64_t) {
        if (progress) progress("suspect", done, total);
      });
  for (const Generation& g : gens) out.continuations.push_back(g.tokens);
  return out;
}

// Teacher-forced on prompt + the suspect's continuation: per prompt, the positions of the
// continuation where the model's top-1 token is the suspect's. `batch` sequences go through one
// forward pass, right-padded to the longest (causal attention: padding after a position cannot
// change its logits).
ModelAgreement measure_agreement(const std::string& dir, const SuspectOutputs& s, int tokens,
                                 int batch, const FingerprintProgress& progress) {
  std::unique_ptr<Model> model = load_model_dir(dir);
  size_t longest_prompt = 0;
  for (const auto& p : s.prompts) longest_prompt = std::max(longest_prompt, p.size());
  check_context(dir, *model, longest_prompt, tokens);
  const int V = model->config().vocab_size;
  ModelAgreement m;
  m.dir = dir;
  m.per_prompt.assign(s.prompts.size(), 0);
  const int total = int(s.prompts.size());
  std::vector<int32_t> ids;
  for (int start = 0; start < total; start += batch) {
    const int B = std::min(batch, total - start);
    size_t T = 1;
    for (size_t b = size_t(start); b < size_t(start + B); b++)
      T = std::max(T, s.prompts[b].size() + s.continuations[b].size());
    ids.assign(size_t(B) * T, 0);
    for (int b = 0; b < B; b++) {
      const auto& p = s.prompts[size_t(start + b)];
      const auto& c = s.continuations[size_t(start + b)];
      std::copy(p.begin(), p.end(), ids.begin() + ptrdiff_t(size_t(b) * T));
      std::copy(c.begin(), c.end(), ids.begin() + ptrdiff_t(size_t(b) * T + p.size()));
      for (int32_t id : c)
        if (id >= V)
          throw Error("{}: the suspect generated token {}, outside this model's vocabulary of {}",
                      dir, id, V);
    }
    const float* logits = model->forward(ids.data(), B, int(T));  // (B,T,V)
    for (int b = 0; b < B; b++) {
      const auto& p = s.prompts[size_t(start + b)];
      const auto& c = s.continuations[size_t(start + b)];
      int32_t agree = 0;
      for (size_t j = 0; j < c.size(); j++) {
        // The row at position t predicts token t + 1; the continuation starts at p.size().
        const float* row = logits + (size_t(b) * T + p.size() - 1 + j) * size_t(V);
        agree += int32_t(std::max_element(row, row + V) - row) == c[j];
      }
      m.per_prompt[size_t(start + b)] = agree;
      m.agreements += agree;
      m.compared += int64_t(c.size());
    }
    if (progress) progress(dir, start + B, total);
  }
  return m;
}

}  // namespace

void check_capability(FingerprintReport& r) {
  r.capability.clear();
  if (r.candidate_accuracy.empty() || r.control_accuracy.empty()) return;
  for (size_t i = 0; i < r.candidate_accuracy.size() && i < r.verdicts.size(); i++) {
    CandidateVerdict& v = r.verdicts[i];
    v.warning.clear();
    for (const ModelAgreement& c : r.control_accuracy) {
      CapabilityCheck k{r.candidate_accuracy[i].dir, c.dir,
                        sign_test(r.candidate_accuracy[i].per_prompt, c.per_prompt)};
      if (k.test.p_value <= r.alpha && v.warning.empty())
        v.warning = fmt::format(
            "{} predicts the real text better than control {} (top-1 accuracy {:.3f} vs {:.3f}; "
            "better on {} prompts, worse on {}; sign test p = {:.3g}): agreement also measures "
            "capability, so use controls as capable as the candidate before trusting a verdict",
            r.candidate_accuracy[i].dir, c.dir, r.candidate_accuracy[i].rate(), c.rate(),
            k.test.wins, k.test.losses, k.test.p_value);
      r.capability.push_back(std::move(k));
    }
  }
}

FingerprintReport run_fingerprint(const FingerprintOptions& o,
                                  const FingerprintProgress& progress) {
  if (o.suspect.empty()) throw Error("fingerprint: no suspect model (--suspect)");
  if (o.candidates.empty()) throw Error("fingerprint: no candidate models (--candidates)");
  if (o.controls.empty())
    throw Error("fingerprint: no control models (--controls): the test needs models known to "
                "be unrelated to the suspect as its baseline");
  if (o.prompts.empty()) throw Error("fingerprint: no prompts");
  if (o.tokens < 1) throw Error("fingerprint: --tokens must be at least 1 (got {})", o.tokens);
  if (!(o.alpha > 0.0 && o.alpha < 1.0))
    throw Error("fingerprint: --alpha must be in (0, 1) (got {})", o.alpha);
  std::set<std::string> seen = {o.suspect};
  for (const auto* list : {&o.candidates, &o.controls})
    for (const std::string& dir : *list)
      if (!seen.insert(dir).second)
        throw Error("fingerprint: model directory {} is listed twice (suspect, candidates and "
                    "controls must be distinct models)",
                    dir);

  // Agreement is token by token, so every model must cut text into the same tokens.
  const std::unique_ptr<Tokenizer> tok = load_model_tokenizer(o.suspect);
  for (const auto* list : {&o.candidates, &o.controls})
    for (const std::string& dir : *list) {
      const std::unique_ptr<Tokenizer> t = load_model_tokenizer(dir);
      if (t->fingerprint() != tok->fingerprint())
        throw Error("{} uses tokenizer {} ({}), the suspect {} uses {} ({}): outputs are "
                    "compared token by token, so every model must share the suspect's tokenizer",
                    dir, t->fingerprint(), t->kind(), o.suspect, tok->fingerprint(), tok->kind());
    }

  FingerprintReport r;
  r.suspect = o.suspect;
  r.tokenizer_fingerprint = tok->fingerprint();
  r.prompts = int64_t(o.prompts.size());
  r.tokens_per_prompt = o.tokens;
  r.alpha = o.alpha;
  r.prompt_source = o.prompt_source;
  if (o.batch < 1) throw Error("fingerprint: --batch must be at least 1 (got {})", o.batch);
  const int batch = o.batch;
  const SuspectOutputs s = suspect_outputs(o, *tok, progress);
  for (const auto& c : s.continuations) r.compared_tokens += int64_t(c.size());
  for (const std::string& dir : o.candidates)
    r.candidates.push_back(measure_agreement(dir, s, o.tokens, batch, progress));
  for (const std::string& dir : o.controls)
    r.controls.push_back(measure_agreement(dir, s, o.tokens, batch, progress));
  fingerprint_decide(r);
  if (!o.references.empty()) {
    if (o.references.size() != o.prompts.size())
      throw Error("fingerprint: {} references for {} prompts", o.references.size(),
                  o.prompts.size());
    // The real continuation, cut to `tokens` tokens, in place of the suspect's.
    SuspectOutputs real;
    real.prompts = s.prompts;
    for (const std::string& text : o.references) {
      std::vector<int32_t> ids = tok->encode(text);
      if (ids.size() > size_t(o.tokens)) ids.resize(size_t(o.tokens));
      real.continuations.push_back(std::move(ids));
    }
    for (const std::string& dir : o.candidates)
      r.candidate_accuracy.push_back(measure_agreement(dir, real, o.tokens, batch, progress));
    for (const std::string& dir : o.controls)
      r.control_accuracy.push_back(measure_agreement(dir, real, o.tokens, batch, progress));
    check_capability(r);
  }
  return r;
}

nlohmann::json fingerprint_json(const FingerprintReport& r) {
  using nlohmann::json;
  // p-values underflow to 0 in double far out in the tail; log10 p keeps them checkable.
  auto log10p = [](double ln) { return std::isfinite(ln) ? json(to_log10(ln)) : json(nullptr); };
  auto model = [](const ModelAgreement& m) {
    return json{{"dir", m.dir},
                {"agreements", m.agreements},
                {"compared", m.compared},
                {"rate", m.rate()},
                {"per_prompt", m.per_prompt}};
  };
  json j;
  j["method"] =
      "Nikolic et al. 2025 provenance test: the suspect's greedy continuations, teacher-forced "
      "top-1 agreement of each candidate and control; per (candidate, control) an exact "
      "one-sided sign test over prompts; per candidate the largest p over controls "
      "(intersection-union); Holm-Bonferroni over candidates";
  j["suspect"] = r.suspect;
  j["tokenizer_fingerprint"] = r.tokenizer_fingerprint;
  j["prompt_source"] = r.prompt_source;
  j["prompts"] = r.prompts;
  j["tokens_per_prompt"] = r.tokens_per_prompt;
  j["compared_tokens"] = r.compared_tokens;
  j["alpha"] = r.alpha;
  j["candidates"] = json::array();
  for (const auto& m : r.candidates) j["candidates"].push_back(model(m));
  j["controls"] = json::array();
  for (const auto& m : r.controls) j["controls"].push_back(model(m));
  j["verdicts"] = json::array();
  for (const CandidateVerdict& v : r.verdicts) {
    json tests = json::array();
    for (const ControlComparison& c : v.controls)
      tests.push_back({{"control", c.control},
                       {"test", "exact one-sided sign test over prompts"},
                       {"wins", c.test.wins},
                       {"losses", c.test.losses},
                       {"ties", c.test.ties},
                       {"trials", c.test.wins + c.test.losses},
                       {"z", c.test.z},
                       {"p", c.test.p_value},
                       {"log10_p", log10p(c.test.log_p)}});
    j["verdicts"].push_back({{"candidate", v.candidate},
                             {"tests", tests},
                             {"weakest_control", v.weakest_control},
                             {"p", v.p_value},
                             {"log10_p", log10p(v.log_p)},
                             {"holm_adjusted_p", v.adjusted_p},
                             {"derived", v.derived},
                             {"warning", v.warning},
                             {"decision", v.derived ? "suspect derives from " + v.candidate
                                                    : std::string("no evidence")}});
  }
  j["capability"] = json::array();
  for (const CapabilityCheck& k : r.capability)
    j["capability"].push_back({{"candidate", k.candidate},
                               {"control", k.control},
                               {"test", "exact one-sided sign test over prompts of top-1 "
                                        "accuracy on the real text"},
                               {"wins", k.test.wins},
                               {"losses", k.test.losses},
                               {"ties", k.test.ties},
                               {"p", k.test.p_value}});
  auto accuracy = [](const std::vector<ModelAgreement>& models) {
    json a = json::array();
    for (const ModelAgreement& m : models)
      a.push_back({{"model", m.dir}, {"correct", m.agreements}, {"compared", m.compared},
                   {"accuracy", m.rate()}});
    return a;
  };
  j["real_text_accuracy"] = {{"candidates", accuracy(r.candidate_accuracy)},
                             {"controls", accuracy(r.control_accuracy)}};
  return j;
}

}  // namespace distill
