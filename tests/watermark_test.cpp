// Watermarks and their detection (src/forensics/watermark.h, detect.h): SipHash against its
// reference vectors, key files and their errors, the green fraction, the processor against the
// detector's green test (left- and self-hash), the Aaronson sampler's distribution, detection of
// watermarked generations of a model vs unwatermarked ones, dedup and the skip rules, the
// random-key calibration (uniform with dedup, not without it on repetitive text), the open-model
// observations against a plain forward pass, and the CLI end to end.
#include <gtest/gtest.h>

#include "test_support.h"
#include <httplib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "formats/model_dir.h"
#include "forensics/detect.h"
#include "forensics/stats.h"
#include "forensics/watermark.h"
#include "infer/generator.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "serve_process.h"

using namespace distill;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return test_support::temp_dir("wm-" + name); }

WatermarkKey test_key(uint64_t seed, WatermarkSeeding seeding = WatermarkSeeding::kLeftHash,
                      int context = 1, WatermarkScheme scheme = WatermarkScheme::kKirchenbauer) {
  WatermarkKey k;
  k.scheme = scheme;
  k.seeding = seeding;
  k.context = context;
  k.gamma = 0.25;
  k.delta = 3.0;
  return with_new_secret(k, &seed);
}

using test_support::error_of;

// Tokens of a "text" independent of any key.
std::vector<int32_t> random_tokens(Rng& rng, int n, int V) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = int32_t(rng.below(uint64_t(V)));
  return ids;
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return out + "\n[exit " + std::to_string(WEXITSTATUS(status)) + "]";
}

}  // namespace

TEST(Watermark, SipHashMatchesTheReferenceVectors) {
  // Key 00..0f; messages 00..07 (one word) and empty, from the SipHash paper's test vectors.
  const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  EXPECT_EQ(siphash(key, nullptr, 0), 0x726fdb47dd0e0e31ull);
  const uint64_t word = 0x0706050403020100ull;
  EXPECT_EQ(siphash(key, &word, 1), 0x93f5f5799a932462ull);
}

TEST(Watermark, KeyFilesRoundTripAndBadOnesNameTheProblem) {
  const fs::path dir = temp_dir("keys");
  WatermarkKey k = test_key(9, WatermarkSeeding::kSelfHash, 4, WatermarkScheme::kAaronson);
  save_watermark_key(k, (dir / "k.json").string());
  EXPECT_EQ(fs::status(dir / "k.json").permissions() & fs::perms::others_read, fs::perms::none);
  const WatermarkKey back = load_watermark_key((dir / "k.json").string());
  EXPECT_EQ(back.secret[0], k.secret[0]);
  EXPECT_EQ(back.secret[1], k.secret[1]);
  EXPECT_EQ(back.context, 4);
  EXPECT_EQ(back.scheme, WatermarkScheme::kAaronson);
  EXPECT_EQ(back.seeding, WatermarkSeeding::kSelfHash);

  auto bad = [&](const std::string& text) {
    std::ofstream(dir / "bad.json") << text;
    return error_of([&] { load_watermark_key((dir / "bad.json").string()); });
  };
  const std::string secret = "\"secret\": \"00112233445566778899aabbccddeeff\"";
  EXPECT_NE(bad("{\"gamma\": 0.25}").find("\"secret\" (32 hex digits) is missing"),
            std::string::npos);
  EXPECT_NE(bad("{\"secret\": \"xyz\"}").find("32 hex digits"), std::string::npos);
  EXPECT_NE(bad("{" + secret + ", \"gamma\": 1.5}").find("gamma must be in (0, 1)"),
            std::string::npos);
  EXPECT_NE(bad("{" + secret + ", \"colour\": 1}").find("unknown watermark key field \"colour\""),
            std::string::npos);
  EXPECT_NE(bad("{" + secret + ", \"seeding\": \"self-hash\", \"context\": 1}")
                .find("self-hash seeding needs context >= 2"),
            std::string::npos);
  EXPECT_NE(bad("{" + secret + ", \"scheme\": \"kgw\"}").find("kirchenbauer or aaronson"),
            std::string::npos);
  EXPECT_NE(bad("{" + secret + ", \"gamma\": \"a\"}").find("wrong type"), std::string::npos);
  EXPECT_NE(bad("not json").find("bad.json: not a JSON watermark key"), std::string::npos);
  EXPECT_NE(error_of([&] { load_watermark_key((dir / "none.json").string()); }).find("cannot open"),
            std::string::npos);
}

TEST(Watermark, GreenFractionIsGamma) {
  const WatermarkKey k = test_key(1);
  int green = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) green += is_green(k, {uint64_t(i / 50), i % 50});
  // 5 standard deviations of Binomial(n, 0.25).
  EXPECT_NEAR(green, 0.25 * n, 5 * std::sqrt(n * 0.25 * 0.75));
}

TEST(Watermark, ProcessorBoostsExactlyTheTokensTheDetectorCallsGreen) {
  for (const auto& [seeding, h] : {std::pair{WatermarkSeeding::kLeftHash, 1},
                                   std::pair{WatermarkSeeding::kLeftHash, 3},
                                   std::pair{WatermarkSeeding::kSelfHash, 4}}) {
    const WatermarkKey k = test_key(2, seeding, h);
    WatermarkProcessor proc(k, 1.0f);
    const int V = 300;
    const std::vector<int32_t> context = {5, 17, 200, 42, 9};
    std::vector<float> logits(V, 0.5f);
    proc.process(0, context, logits.data(), V);
    int boosted = 0;
    for (int v = 0; v < V; v++) {
      std::vector<int32_t> ids = context;
      ids.push_back(v);
      WatermarkTuple t;
      ASSERT_TRUE(watermark_tuple(k, ids, context.size(), -1, &t));
      const bool green = is_green(k, t);
      EXPECT_FLOAT_EQ(logits[size_t(v)], green ? 0.5f + 3.0f : 0.5f) << v;
      boosted += green;
    }
    EXPECT_GT(boosted, 40);
    EXPECT_LT(boosted, 110);
    // A context shorter than the window is left alone (the detector skips it too).
    if (seeding == WatermarkSeeding::kLeftHash && h > 1) {
      std::vector<float> early(V, 0.5f);
      proc.process(0, std::vector<int32_t>(size_t(h - 1), 7), early.data(), V);
      for (float x : early) EXPECT_EQ(x, 0.5f);
    }
  }
}

TEST(Watermark, AaronsonSamplerFollowsTheModelDistribution) {
  // Over many contexts (hence many independent uniforms) the emitted token's frequencies
  // match softmax(logits / T).
  const WatermarkKey k = test_key(3, WatermarkSeeding::kLeftHash, 2, WatermarkScheme::kAaronson);
  WatermarkProcessor proc(k, 0.7f);
  const int V = 6;
  const std::vector<float> base = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -3.0f};
  std::vector<double> p(V);
  double z = 0;
  for (int v = 0; v < V; v++) z += p[size_t(v)] = std::exp(base[size_t(v)] / 0.7);
  std::vector<int> count(V, 0);
  const int n = 30000;
  for (int i = 0; i < n; i++) {
    std::vector<float> logits = base;
    proc.process(0, {i % 1000, i / 1000}, logits.data(), V);
    int chosen = -1;
    for (int v = 0; v < V; v++)
      if (std::isfinite(logits[size_t(v)])) {
        EXPECT_EQ(chosen, -1);
        chosen = v;
      }
    ASSERT_GE(chosen, 0);
    count[size_t(chosen)]++;
  }
  for (int v = 0; v < V; v++) {
    const double pv = p[size_t(v)] / z;
    EXPECT_NEAR(count[size_t(v)], n * pv, 5 * std::sqrt(n * pv * (1 - pv)) + 1) << v;
  }
}

TEST(Watermark, DetectsAModelsWatermarkedGenerationsAndNotUnwatermarkedOnes) {
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(5);
  const int V = m.config().vocab_size;
  Generator gen(m, 8, 160);
  Rng rng(4);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 16; i++) prompts.push_back(random_tokens(rng, 8, V));
  GenerateOptions o;
  o.sampling.temperature = 1.0f;
  o.max_tokens = 120;
  o.seed = 3;
  for (const auto scheme : {WatermarkScheme::kKirchenbauer, WatermarkScheme::kAaronson}) {
    const WatermarkKey k = test_key(6, WatermarkSeeding::kLeftHash, 2, scheme);
    WatermarkProcessor proc(k, 1.0f);
    const auto marked = gen.generate(prompts, o, &proc);
    const auto plain = gen.generate(prompts, o);
    for (size_t i = 0; i < prompts.size(); i++) {
      std::vector<int32_t> ids = prompts[i];
      TokenText t{"m", ids, int32_t(ids.size())};
      t.ids.insert(t.ids.end(), marked[i].tokens.begin(), marked[i].tokens.end());
      const DetectionResult r = score_observations(k, text_observations({t}), {});
      EXPECT_GT(r.z, 4.0) << "marked " << i << " scheme " << int(scheme);
      EXPECT_LT(r.ln_p, std::log(1e-4));
      EXPECT_EQ(r.scored + r.duplicates + r.too_early, 120);
      TokenText u{"u", ids, int32_t(ids.size())};
      u.ids.insert(u.ids.end(), plain[i].tokens.begin(), plain[i].tokens.end());
      const DetectionResult q = score_observations(k, text_observations({u}), {});
      EXPECT_LT(q.z, 4.0) << "plain " << i;
    }
  }
}

TEST(Watermark, DedupScoresEachPairOnce) {
  const WatermarkKey k = test_key(7);
  TokenText t{"rep", {}, 0};
  for (int r = 0; r < 50; r++)
    for (int32_t v : {3, 1, 4, 1, 5, 9, 2, 6})
      t.ids.push_back(v);
  const DetectionResult d = score_observations(k, text_observations({t}), {});
  // Distinct (previous token, token) pairs: 31 41 14 15 59 92 26 63 (the wrap 6->3).
  EXPECT_EQ(d.scored, 8);
  EXPECT_EQ(d.too_early, 1);
  EXPECT_EQ(d.duplicates, 400 - 1 - 8);
  ScoreRules no;
  no.dedup = false;
  EXPECT_EQ(score_observations(k, text_observations({t}), no).scored, 399);
}

TEST(Watermark, SkipRulesDropCopyablePairs) {
  const WatermarkKey k = test_key(8, WatermarkSeeding::kLeftHash, 2);
  // Closed mode: the completion repeats the prompt's bigram windows.
  ObservationSet set;
  set.texts.push_back({"c", {10, 11, 12, 13, 10, 11, 12, 40, 41}, 4});
  for (int pos = 4; pos < 9; pos++) set.obs.push_back({0, pos, set.texts[0].ids[size_t(pos)]});
  ScoreRules rules;
  rules.skip_prompt_windows = true;
  DetectionResult r = score_observations(k, set, rules);
  // The prompt's windows are (10,11), (11,12), (12,13): positions 4, 6 and 7 use them; the
  // windows (13,10) at 5 and (12,40) at 8 are new.
  EXPECT_EQ(r.prompt_skipped, 3);
  EXPECT_EQ(r.scored, 2);
  // Open mode: a prediction equal to a pair already in the text is skipped.
  ObservationSet open;
  open.texts.push_back({"o", {1, 2, 3, 1, 2, 7}, 0});
  open.obs = {{0, 2, 3}, {0, 3, 1}, {0, 4, 2}, {0, 5, 3}};  // pos 5 predicts 3 after (1,2)
  ScoreRules ctx;
  ctx.skip_context_pairs = true;
  r = score_observations(k, open, ctx);
  EXPECT_EQ(r.context_skipped, 1);  // (1,2)->3 was in the text at position 2
  EXPECT_EQ(r.scored, 3);
  // The filter keeps only windows of the filter data.
  std::vector<std::vector<int32_t>> data = {{1, 2, 3}};
  ScoreRules f;
  f.filter_texts = &data;
  r = score_observations(k, open, f);
  // The data's windows are (1,2) and (2,3): position 4's (3,1) is filtered out; position 5
  // repeats position 2's pair.
  EXPECT_EQ(r.filtered, 1);
  EXPECT_EQ(r.duplicates, 1);
  EXPECT_EQ(r.scored, 2);
}

TEST(Watermark, RandomKeyCalibrationIsUniformWithDedupAndNotWithout) {
  // Repetitive "text": 300 texts drawn from a small phrase book, so pairs repeat a lot.
  Rng rng(11);
  std::vector<std::vector<int32_t>> phrases;
  for (int i = 0; i < 40; i++) phrases.push_back(random_tokens(rng, 6, 64));
  std::vector<TokenText> texts;
  for (int i = 0; i < 300; i++) {
    TokenText t{fmt::format("t{}", i), {}, 0};
    for (int j = 0; j < 12; j++) {
      const auto& p = phrases[rng.below(phrases.size())];
      t.ids.insert(t.ids.end(), p.begin(), p.end());
    }
    texts.push_back(t);
  }
  const ObservationSet set = text_observations(texts);
  const WatermarkKey k = test_key(12);
  const Calibration with = calibrate(k, set, {}, 400, 1);
  EXPECT_LE(with.below_001, 12);  // 4 expected at the 1% level
  EXPECT_LE(with.below_005, 32);  // 20 expected
  EXPECT_GT(with.ks_p, 1e-3);
  ScoreRules no;
  no.dedup = false;
  const Calibration without = calibrate(k, set, no, 400, 1);
  EXPECT_GT(without.below_001, 40) << "repeated pairs make the binomial null far too narrow";
}

TEST(Watermark, OpenModelObservationsAreTheModelsTop1Predictions) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(13);
  const int V = m.config().vocab_size;
  Rng rng(2);
  TokenText t{"x", random_tokens(rng, 40, V), 5};
  const ObservationSet set = open_model_observations(m, {t});
  ASSERT_EQ(set.obs.size(), 35u);
  const float* logits = m.forward(t.ids.data(), 1, int(t.ids.size()));
  for (const Observation& o : set.obs) {
    const float* row = logits + size_t(o.pos - 1) * size_t(V);
    EXPECT_EQ(o.token, int32_t(std::max_element(row, row + V) - row)) << o.pos;
  }
}

// A suspect whose vocabulary is padded past its tokenizer's: with the tokenizer's size as the
// limit, neither mode observes a padding id (no output can contain one), where the unrestricted
// top-1 often is one for this model (its weights scaled up so the padding ranks high).
TEST(Watermark, PaddedVocabularyIdsAreNeverObserved) {
  ModelConfig c = model_preset("llama-tiny");
  const int tokens = ByteTokenizer::kVocabSize;
  c.vocab_size = tokens + 64;
  Model m(c);
  m.init_weights(13);
  for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 4.0f;
  Rng rng(2);
  TokenText t{"x", random_tokens(rng, 40, tokens), 5};
  int padding = 0;
  for (const Observation& o : open_model_observations(m, {t}).obs) padding += o.token >= tokens;
  ASSERT_GT(padding, 0) << "the premise: unrestricted, the padding is predicted";
  const ObservationSet open = open_model_observations(m, {t}, {}, tokens);
  ASSERT_EQ(open.obs.size(), 35u);
  for (const Observation& o : open.obs) EXPECT_LT(o.token, tokens) << o.pos;
  ClosedModelOptions co;
  co.max_tokens = 30;
  co.temperature = 1.5f;
  co.vocab_limit = tokens;
  const ObservationSet closed = closed_model_observations(m, {TokenText{"p", {1, 2, 3}, 0}}, co);
  ASSERT_EQ(closed.obs.size(), 30u);
  for (const Observation& o : closed.obs) EXPECT_LT(o.token, tokens) << o.pos;
}

TEST(Watermark, CliGeneratesDetectsAndReportsErrors) {
  const fs::path dir = temp_dir("cli");
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(21);
  SaveModelOptions so;
  so.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir / "teacher").string(), so);
  {
    std::ofstream p(dir / "prompts.jsonl");
    for (int i = 0; i < 12; i++) p << "{\"id\": \"p" << i << "\", \"prompt\": \"and the lord " << i << "\"}\n";
  }
  const std::string bin = DISTILL_BINARY, d = dir.string();
  std::string out = run(bin + " detect keygen --out " + d + "/key.json --context 2 --delta 3");
  ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
  out = run(bin + " generate --teacher " + d + "/teacher --prompts " + d +
            "/prompts.jsonl --out " + d + "/marked --max-tokens 100 --watermark " + d +
            "/key.json --top-k 2");
  ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
  out = run(bin + " generate --teacher " + d + "/teacher --prompts " + d +
            "/prompts.jsonl --out " + d + "/plain --max-tokens 100 --top-k 2");
  ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
  out = run(bin + " detect text " + d + "/marked --key " + d + "/key.json --json " + d + "/m.json");
  ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
  nlohmann::json j = nlohmann::json::parse(std::ifstream(d + "/m.json"));
  EXPECT_EQ(j["flagged"], 12) << out;
  EXPECT_LT(double(j["pooled"]["log10_p"]), -20.0);
  out = run(bin + " detect text " + d + "/plain --key " + d + "/key.json --json " + d + "/p.json");
  j = nlohmann::json::parse(std::ifstream(d + "/p.json"));
  EXPECT_LE(int(j["flagged"]), 1) << out;
  EXPECT_GT(double(j["pooled"]["log10_p"]), -3.0) << out;
  // The dataset records the watermark's parameters but never its secret.
  std::ifstream ds(d + "/marked/dataset.json");
  const std::string header((std::istreambuf_iterator<char>(ds)), std::istreambuf_iterator<char>());
  EXPECT_NE(header.find("kirchenbauer left-hash h=2"), std::string::npos);
  const nlohmann::json key = nlohmann::json::parse(std::ifstream(d + "/key.json"));
  EXPECT_EQ(header.find(key["secret"].get<std::string>()), std::string::npos);
  // The Gumbel sampler draws from the whole tempered distribution: truncation is refused.
  out = run(bin + " detect keygen --out " + d + "/gumbel.json --scheme aaronson --context 2");
  ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
  out = run(bin + " generate --teacher " + d + "/teacher --prompts " + d +
            "/prompts.jsonl --out " + d + "/gumbel --max-tokens 10 --top-p 0.9 --watermark " + d +
            "/gumbel.json");
  EXPECT_NE(out.find("the aaronson watermark draws from the whole distribution"),
            std::string::npos) << out;
  EXPECT_FALSE(fs::exists(d + "/gumbel/records.jsonl"));
  // Open-model test on the watermarked dataset itself (the teacher as suspect) runs end to end.
  out = run(bin + " detect model --suspect " + d + "/teacher --key " + d + "/key.json --text " +
            d + "/marked");
  EXPECT_NE(out.find("open model test"), std::string::npos) << out;
  EXPECT_NE(out.find("[exit 0]"), std::string::npos) << out;
  // Closed-model test runs end to end and prints the exact test; open mode needs --text.
  out = run(bin + " detect model --suspect " + d + "/teacher --key " + d + "/key.json --mode closed"
            " --prompts " + d + "/prompts.jsonl --max-new-tokens 30 --calibrate 20");
  EXPECT_NE(out.find("exact binomial tail"), std::string::npos) << out;
  EXPECT_NE(out.find("calibration: 20 random keys"), std::string::npos) << out;
  out = run(bin + " detect model --suspect " + d + "/teacher --key " + d + "/key.json");
  EXPECT_NE(out.find("error: --mode open needs --text"), std::string::npos) << out;
  out = run(bin + " detect text " + d + "/prompts.jsonl --key " + d + "/prompts.jsonl");
  EXPECT_NE(out.find("[exit 1]"), std::string::npos) << out;
  EXPECT_NE(out.find("prompts.jsonl: not a JSON watermark key"), std::string::npos) << out;
  std::ofstream(d + "/texts.jsonl") << "{\"text\": \"and the lord\"}\n";
  out = run(bin + " detect text " + d + "/texts.jsonl --key " + d + "/key.json");
  EXPECT_NE(out.find("needs --tokenizer"), std::string::npos) << out;
  fs::remove_all(dir);
}

TEST(Watermark, ServedCompletionsCarryTheWatermark) {
  const fs::path dir = temp_dir("serve");
  const std::string model = testing_serve::save_tiny_model(dir / "model", 3);
  for (const char* scheme : {"kirchenbauer", "aaronson"}) {
    const std::string key = (dir / (std::string(scheme) + ".json")).string();
    const std::string out = run(std::string(DISTILL_BINARY) + " detect keygen --out " + key +
                                " --scheme " + scheme + " --context 2 --delta 3 --secret-seed 5");
    ASSERT_NE(out.find("[exit 0]"), std::string::npos) << out;
    testing_serve::ServeProcess server({"--model", model, "--watermark", key},
                                       (dir / "serve.log").string());
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(60);
    const nlohmann::json body = {{"model", "model"}, {"prompt", "In the beginning"},
                                 {"max_tokens", 120}, {"temperature", 1.2}, {"n", 6},
                                 {"seed", 1}};
    auto res = client.Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(res) << scheme;
    ASSERT_EQ(res->status, 200) << res->body;
    const nlohmann::json reply = nlohmann::json::parse(res->body);
    std::vector<TokenText> texts;
    for (const auto& choice : reply["choices"]) {
      const std::string prompt = "In the beginning", text = choice["text"];
      TokenText t{"c", {}, int32_t(prompt.size())};
      for (unsigned char c : prompt + text) t.ids.push_back(c);
      texts.push_back(t);
    }
    ASSERT_EQ(texts.size(), 6u);
    const WatermarkKey k = load_watermark_key(key);
    const DetectionResult r = score_observations(k, text_observations(texts), {});
    EXPECT_GT(r.z, 4.0) << scheme << ": T " << r.scored << " score " << r.score;
    // Another key sees nothing.
    const uint64_t other = 99;
    const DetectionResult q =
        score_observations(with_new_secret(k, &other), text_observations(texts), {});
    EXPECT_LT(q.z, 4.0) << scheme;
  }
  fs::remove_all(dir);
}
