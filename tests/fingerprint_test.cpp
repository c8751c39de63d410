// distill fingerprint (Nikolic et al. 2025 provenance test): the sign test against binomial
// tails summed here from exact integer coefficients; the intersection-union over controls and
// Holm-Bonferroni over candidates on hand-made agreement counts against an independent Holm;
// on tiny models pretrained in the test, a student distilled from a parent is attributed to the
// parent and not to a model of the parent's shape pretrained with another seed, and a suspect
// unrelated to every candidate is attributed to none; a tokenizer mismatch is an error naming
// the model directory; the CLI's --help lists every option with its default and its --json
// holds the same verdicts.
#include <gtest/gtest.h>

#include "test_support.h"
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "eval/task_builder.h"
#include "forensics/fingerprint.h"
#include "formats/model_dir.h"
#include "model/presets.h"
#include "tokenizer/bpe_trainer.h"
#include "train/distill_train.h"
#include "train/pretrain.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

// P(X >= k), X ~ Binomial(n, 1/2), from exact integer binomial coefficients (n <= 60).
double binomial_half_tail(int k, int n) {
  unsigned long long sum = 0, c = 1;  // c = C(n, i)
  for (int i = 0; i <= n; i++) {
    if (i >= k) sum += c;
    c = c * (unsigned long long)(n - i) / (unsigned long long)(i + 1);
  }
  return double(sum) / std::ldexp(1.0, n);
}

TEST(SignTest, CountsAndExactTailMatchAnIndependentComputation) {
  // One token per prompt: McNemar's exact test. 8 discordant prompts favour a, 2 favour b:
  // P(X >= 8 | n = 10) = (45 + 10 + 1) / 1024.
  const std::vector<int32_t> a1 = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1};
  const std::vector<int32_t> b1 = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1};
  const SignTest t1 = sign_test(a1, b1);
  EXPECT_EQ(t1.wins, 8);
  EXPECT_EQ(t1.losses, 2);
  EXPECT_EQ(t1.ties, 3);
  EXPECT_NEAR(t1.p_value, 56.0 / 1024.0, 1e-15);
  EXPECT_NEAR(t1.z, (8 - 5) / std::sqrt(2.5), 1e-12);

  // Many tokens per prompt: only the sign of the per-prompt difference counts.
  Rng rng(3);
  std::vector<int32_t> a, b;
  int wins = 0, losses = 0;
  for (int i = 0; i < 57; i++) {
    a.push_back(int32_t(rng.below(17)));
    b.push_back(int32_t(rng.below(13)));
    wins += a.back() > b.back();
    losses += a.back() < b.back();
  }
  const SignTest t = sign_test(a, b);
  EXPECT_EQ(t.wins, wins);
  EXPECT_EQ(t.losses, losses);
  EXPECT_EQ(t.ties, 57 - wins - losses);
  const double want = binomial_half_tail(wins, wins + losses);
  EXPECT_NEAR(t.p_value, want, 1e-12 * want);
  // Swapping the samples gives the other tail.
  EXPECT_NEAR(sign_test(b, a).p_value, binomial_half_tail(losses, wins + losses), 1e-12);
  // No discordant prompt: no evidence either way.
  EXPECT_EQ(sign_test({2, 3}, {2, 3}).p_value, 1.0);
  EXPECT_THROW(sign_test({1, 2}, {1}), Error);
}

// Per-prompt agreements of a model with `more` prompts above the baseline (1 vs 0) and `less`
// prompts below it, the rest tied at 0.
ModelAgreement model(const std::string& name, int n, int more, int less) {
  ModelAgreement m;
  m.dir = name;
  for (int i = 0; i < n; i++) m.per_prompt.push_back(i < more ? 1 : 0);
  for (int i = 0; i < less; i++) m.per_prompt[size_t(n - 1 - i)] = -1;  // below a 0 baseline
  for (int32_t x : m.per_prompt) m.agreements += x;
  m.compared = n;
  return m;
}

TEST(FingerprintDecide, MaxOverControlsThenHolmAcrossCandidates) {
  FingerprintReport r;
  r.prompts = 40;
  r.alpha = 0.05;
  // Two controls: all zeros, and one that agrees on the first 3 prompts.
  r.controls = {model("zero", 40, 0, 0), model("three", 40, 3, 0)};
  // Candidates: strong (14 above), medium (9 above, 1 below), weak (5 above), none.
  r.candidates = {model("medium", 40, 9, 1), model("strong", 40, 14, 0), model("weak", 40, 5, 0),
                  model("none", 40, 0, 0)};
  fingerprint_decide(r);
  ASSERT_EQ(r.verdicts.size(), 4u);
  // Independent: per candidate the sign-test tails against each control, the max, and Holm.
  auto tail_vs = [&](const ModelAgreement& c, const ModelAgreement& k) {
    int w = 0, l = 0;
    for (size_t i = 0; i < c.per_prompt.size(); i++) {
      w += c.per_prompt[i] > k.per_prompt[i];
      l += c.per_prompt[i] < k.per_prompt[i];
    }
    return w + l == 0 ? 1.0 : binomial_half_tail(w, w + l);
  };
  std::vector<double> p;
  for (size_t i = 0; i < 4; i++) {
    const double p0 = tail_vs(r.candidates[i], r.controls[0]);
    const double p1 = tail_vs(r.candidates[i], r.controls[1]);
    p.push_back(std::max(p0, p1));
    EXPECT_NEAR(r.verdicts[i].p_value, p.back(), 1e-12) << r.candidates[i].dir;
    EXPECT_EQ(r.verdicts[i].weakest_control, p1 > p0 ? "three" : "zero");  // first on a tie
    ASSERT_EQ(r.verdicts[i].controls.size(), 2u);
    EXPECT_NEAR(r.verdicts[i].controls[0].test.p_value, p0, 1e-12);
  }
  // Holm by hand: sort ascending, multiply the k-th smallest by (m - k), running max, cap 1.
  std::vector<size_t> order = {0, 1, 2, 3};
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return p[x] < p[y]; });
  EXPECT_EQ(order[0], 1u);  // strong first
  std::vector<double> holm(4);
  double running = 0;
  for (size_t k = 0; k < 4; k++) {
    running = std::max(running, std::min(1.0, double(4 - k) * p[order[k]]));
    holm[order[k]] = running;
  }
  for (size_t i = 0; i < 4; i++) {
    EXPECT_NEAR(r.verdicts[i].adjusted_p, holm[i], 1e-12) << r.candidates[i].dir;
    EXPECT_EQ(r.verdicts[i].derived, holm[i] <= 0.05) << r.candidates[i].dir;
  }
  // strong: max(2^-14, P(X>=11|11)=2^-11) = 2^-11, Holm x4 -> derived. medium: vs "three",
  // 6 of 7 discordant (p = 8/128): not. weak: vs "three" 2 above, 0 below (p = 1/4): not.
  EXPECT_NEAR(r.verdicts[1].p_value, std::ldexp(1.0, -11), 1e-15);
  EXPECT_TRUE(r.verdicts[1].derived);
  EXPECT_FALSE(r.verdicts[0].derived);
  EXPECT_FALSE(r.verdicts[2].derived);
  EXPECT_EQ(r.verdicts[3].p_value, 1.0);
  // A candidate that beats one control clearly but not the other is not attributed.
  EXPECT_LT(r.verdicts[0].controls[0].test.p_value, 0.05);
  EXPECT_GT(r.verdicts[0].p_value, 0.05);

  FingerprintReport empty = r;
  empty.controls.clear();
  EXPECT_THROW(fingerprint_decide(empty), Error);
  FingerprintReport ragged = r;
  ragged.controls[1].per_prompt.pop_back();
  EXPECT_THROW(fingerprint_decide(ragged), Error);
}

TEST(FingerprintCapability, WarnsWhenTheCandidateOutpredictsAControlOnTheRealText) {
  // Agreement with the suspect is also a measure of capability: a candidate that predicts the
  // real text much better than the controls gets a warning; one as good as them does not.
  FingerprintReport r;
  r.alpha = 0.05;
  r.prompts = 30;
  r.candidates = {model("able", 30, 12, 0), model("peer", 30, 12, 0)};
  r.controls = {model("zero", 30, 0, 0)};
  fingerprint_decide(r);
  r.candidate_accuracy = {model("able", 30, 20, 0), model("peer", 30, 2, 2)};
  r.control_accuracy = {model("zero", 30, 0, 0)};
  check_capability(r);
  ASSERT_EQ(r.capability.size(), 2u);
  EXPECT_EQ(r.capability[0].test.wins, 20);
  EXPECT_NEAR(r.capability[0].test.p_value, std::pow(0.5, 20), 1e-15);
  EXPECT_NE(r.verdicts[0].warning.find("able predicts the real text better than control zero"),
            std::string::npos)
      << r.verdicts[0].warning;
  EXPECT_EQ(r.verdicts[1].warning, "");  // 2 better, 2 worse: no evidence of more capability
  EXPECT_TRUE(r.verdicts[0].derived);     // the statistics are unchanged; the warning says why
}

// ---- tiny real models ------------------------------------------------------------------------

// Sentences from a little grammar with many equally likely choices: which of them a model
// prefers at an uncertain position is an accident of its initialisation and data order, the
// idiosyncrasy a distilled student inherits from its teacher.
std::string write_corpus(const fs::path& path) {
  const char* a[] = {"the king", "a shepherd", "the people", "my son", "the prophet", "his wife"};
  const char* b[] = {"went unto", "spake to", "blessed", "saw", "followed", "sought"};
  const char* c[] = {"the city", "the river", "his brethren", "the field", "the mountain",
                     "a stranger"};
  Rng rng(11);
  std::string text;
  while (text.size() < 40000)
    text += fmt::format("{} {} {}{}", a[rng.below(6)], b[rng.below(6)], c[rng.below(6)],
                        rng.below(3) == 0 ? ".\n" : ", and ");
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

ModelConfig tiny_shape() {
  ModelConfig c = model_preset("gpt2-tiny");
  c.num_layers = 2;
  c.hidden_size = 64;
  c.num_heads = c.num_kv_heads = 2;
  c.head_dim = 32;
  c.intermediate_size = 256;
  c.max_position = 128;
  return c;
}

TrainLoopOptions tiny_loop(const fs::path& out, uint64_t seed, int steps) {
  TrainLoopOptions l;
  l.out = out.string();
  l.seq_len = 32;
  l.batch_size = 8;
  l.steps = steps;
  l.warmup = 10;
  l.lr = 3e-3f;
  l.min_lr = 3e-4f;
  l.eval_every = 0;
  l.eval_batches = 1;
  l.save_every = 0;
  l.seed = seed;
  return l;
}

class FingerprintModels : public ::testing::Test {
 protected:
  static constexpr int kSteps = 150;  // optimizer steps of 8 x 32 tokens per model
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("distill-fingerprint-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    corpus_ = write_corpus(dir_ / "corpus.txt");
    Model shape(tiny_shape());
    save_model_dir(shape, (dir_ / "shape").string());
    auto quiet = [](const TrainProgress&) {};
    // The parent (seed 1) and three unrelated models of its shape: same data, other seeds.
    for (uint64_t seed : {1, 2, 3, 4}) {
      PretrainOptions p;
      p.data = {corpus_};
      p.config = (dir_ / "shape" / "config.json").string();
      p.val_fraction = 0.1;
      p.loop = tiny_loop(dir_ / ("pre-" + std::to_string(seed)), seed, kSteps);
      pretrain(p, quiet);
    }
    // The child: a fresh model of the same shape distilled from the parent (forward KL, online).
    DistillTrainOptions d;
    d.teacher = model_dir(1);
    d.data = {corpus_};
    d.val_fraction = 0.1;
    d.student_config = (dir_ / "shape" / "config.json").string();
    d.loss = "kl";
    d.loop = tiny_loop(dir_ / "child", 6, kSteps + 100);
    distill_train(d, quiet);
    NextWordsTaskOptions t;
    t.val_fraction = 0.1;
    t.count = 200;
    t.context_bytes = 40;
    t.seed = 2;
    for (const auto& e : make_next_words_task({corpus_}, t)) prompts_.push_back(e.prompt);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string model_dir(uint64_t seed) {
    return (dir_ / ("pre-" + std::to_string(seed)) / "model").string();
  }
  static std::string child_dir() { return (dir_ / "child" / "model").string(); }

  static FingerprintOptions options(const std::string& suspect, std::vector<std::string> cands,
                                    std::vector<std::string> controls) {
    FingerprintOptions o;
    o.suspect = suspect;
    o.candidates = std::move(cands);
    o.controls = std::move(controls);
    o.prompts = prompts_;
    o.tokens = 16;
    o.batch = 40;
    return o;
  }

  static fs::path dir_;
  static std::string corpus_;
  static std::vector<std::string> prompts_;
};
fs::path FingerprintModels::dir_;
std::string FingerprintModels::corpus_;
std::vector<std::string> FingerprintModels::prompts_;

// The counts behind each verdict, in the test log (docs/fingerprint.md quotes them).
void print_verdicts(const FingerprintReport& r) {
  for (const auto& v : r.verdicts) {
    for (const auto& c : v.controls)
      std::printf("%s: %s vs %s: %lld more, %lld less, %lld ties, p %.3g\n", r.suspect.c_str(),
                  v.candidate.c_str(), c.control.c_str(), (long long)c.test.wins,
                  (long long)c.test.losses, (long long)c.test.ties, c.test.p_value);
    std::printf("%s: %s: p %.3g, Holm p %.3g, derived %d\n", r.suspect.c_str(),
                v.candidate.c_str(), v.p_value, v.adjusted_p, int(v.derived));
  }
}

TEST_F(FingerprintModels, DistilledChildIsAttributedToItsParentOnly) {
  // Candidates: the parent and an unrelated model; controls: two more unrelated models.
  const FingerprintReport r = run_fingerprint(
      options(child_dir(), {model_dir(1), model_dir(2)}, {model_dir(3), model_dir(4)}));
  ASSERT_EQ(r.verdicts.size(), 2u);
  EXPECT_EQ(r.prompts, 200);
  EXPECT_EQ(r.compared_tokens, 200 * 16);
  for (const auto& m : r.candidates) EXPECT_EQ(m.compared, 200 * 16);
  print_verdicts(r);
  EXPECT_GT(r.candidates[0].rate(), r.controls[0].rate());
  EXPECT_GT(r.candidates[0].rate(), r.controls[1].rate());
  EXPECT_TRUE(r.verdicts[0].derived) << "Holm p " << r.verdicts[0].adjusted_p;
  EXPECT_LT(r.verdicts[0].p_value, 1e-3);
  EXPECT_FALSE(r.verdicts[1].derived) << "Holm p " << r.verdicts[1].adjusted_p;
  EXPECT_GT(r.verdicts[1].adjusted_p, 0.05);
}

TEST_F(FingerprintModels, UnrelatedSuspectIsAttributedToNoCandidate) {
  // The suspect is model 2 (unrelated to all), the candidates the parent and the child.
  const FingerprintReport r = run_fingerprint(
      options(model_dir(2), {model_dir(1), child_dir()}, {model_dir(3), model_dir(4)}));
  print_verdicts(r);
  for (const auto& v : r.verdicts) {
    EXPECT_FALSE(v.derived) << v.candidate << " Holm p " << v.adjusted_p;
    EXPECT_GT(v.adjusted_p, 0.05) << v.candidate;
  }
}

TEST_F(FingerprintModels, TokenizerMismatchNamesTheModelDirectory) {
  // A model of the same shape whose directory carries a (byte-only) BPE tokenizer.json.
  const fs::path other = dir_ / "bpe-model";
  Model m(tiny_shape());
  m.init_weights(9);
  save_model_dir(m, other.string());
  BpeTrainerOptions b;
  b.vocab_size = 256;
  b.special_tokens = {};
  BpeTrainer trainer(b);
  trainer.add_text("the king went unto the city");
  save_bpe_tokenizer(trainer.train(), other.string());
  try {
    run_fingerprint(options(child_dir(), {model_dir(1)}, {other.string()}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(other.string()), std::string::npos) << what;
    EXPECT_NE(what.find("tokenizer"), std::string::npos) << what;
  }
  // Bad requests are errors too.
  EXPECT_THROW(run_fingerprint(options(child_dir(), {model_dir(1)}, {})), Error);
  EXPECT_THROW(run_fingerprint(options(child_dir(), {model_dir(1)}, {model_dir(1)})), Error);
  FingerprintOptions long_prompts = options(child_dir(), {model_dir(1)}, {model_dir(3)});
  long_prompts.tokens = 120;  // 40-byte prompts + 120 > the context of 128
  EXPECT_THROW(run_fingerprint(long_prompts), Error);
}

using test_support::CliRun;
using test_support::run_cli;

TEST_F(FingerprintModels, CliHelpTableAndJson) {
  const CliRun help = run_cli("fingerprint --help", dir_);
  ASSERT_EQ(help.status, 0) << help.err;
  // Every option, and on its line its default.
  const std::vector<std::pair<std::string, std::string>> options = {
      {"--suspect", "REQUIRED"}, {"--candidates", "REQUIRED"}, {"--controls", "REQUIRED"},
      {"--prompts", ""}, {"--text", "build/data/kjv.txt"}, {"--count", "=200"},
      {"--context-bytes", "=128"}, {"--val-fraction", "=0.05"}, {"--seed", "=1"},
      {"--tokens", "=32"}, {"--alpha", "=0.05"}, {"--batch", "=16"}, {"--json", ""}};
  for (const auto& [opt, def] : options) {
    const size_t at = help.out.find("  " + opt + " ");
    ASSERT_NE(at, std::string::npos) << opt << "\n" << help.out;
    const std::string line = help.out.substr(at, help.out.find('\n', at) - at);
    EXPECT_NE(line.find(def), std::string::npos) << opt << ": " << line;
  }
  EXPECT_NE(help.out.find("build/data/kjv.txt"), std::string::npos) << help.out;

  std::ofstream prompts(dir_ / "prompts.jsonl");
  for (const std::string& p : prompts_) prompts << nlohmann::json{{"prompt", p}}.dump() << "\n";
  prompts.close();
  const std::string json = (dir_ / "report.json").string();
  const CliRun r = run_cli(fmt::format("fingerprint --suspect {} --candidates {},{} --controls "
                                       "{} --controls {} --prompts {} --tokens 16 --batch 40 "
                                       "--json {}",
                                       child_dir(), model_dir(1), model_dir(2), model_dir(3),
                                       model_dir(4), (dir_ / "prompts.jsonl").string(), json),
                           dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("derives from " + model_dir(1)), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("derives from " + model_dir(2)), std::string::npos) << r.out;
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["prompts"], 200);
  EXPECT_EQ(j["tokens_per_prompt"], 16);
  EXPECT_EQ(j["compared_tokens"], 200 * 16);
  ASSERT_EQ(j["verdicts"].size(), 2u);
  EXPECT_EQ(j["verdicts"][0]["derived"], true);
  EXPECT_EQ(j["verdicts"][1]["derived"], false);
  EXPECT_EQ(j["verdicts"][0]["tests"].size(), 2u);
  EXPECT_EQ(j["candidates"][0]["per_prompt"].size(), 200u);

  // The library's verdicts, recomputed from the per-prompt counts in the JSON.
  FingerprintReport again;
  again.prompts = 200;
  for (const char* role : {"candidates", "controls"})
    for (const auto& m : j[role]) {
      ModelAgreement a;
      a.dir = m["dir"];
      a.per_prompt = m["per_prompt"].get<std::vector<int32_t>>();
      (std::string(role) == "candidates" ? again.candidates : again.controls).push_back(a);
    }
  fingerprint_decide(again);
  EXPECT_DOUBLE_EQ(again.verdicts[0].adjusted_p, j["verdicts"][0]["holm_adjusted_p"].get<double>());

  const CliRun bad = run_cli(fmt::format("fingerprint --suspect {} --candidates {} --controls {} "
                                         "--text {}",
                                         child_dir(), model_dir(1), model_dir(3),
                                         (dir_ / "missing.txt").string()),
                             dir_);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("error: "), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("missing.txt"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace distill
