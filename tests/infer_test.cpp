// Inference with a KV cache: incremental logits equal the full forward (and the PyTorch golden
// logits), cached greedy generation equals recomputing the window, batching does not change
// results, log-probabilities are normalized, the logits-processor hook and stop rules work.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "infer/batch_decoder.h"
#include "infer/generator.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "model/presets.h"

namespace distill {
namespace {

const std::string kParity = std::string(DISTILL_FIXTURES) + "/parity/";

class IncrementalLogits : public ::testing::TestWithParam<std::string> {};

// Every parity architecture (gpt2, GQA + llama3 RoPE, qwen2 bias + linear RoPE, qwen3 q/k norm,
// mistral): rows fed one sequence at a time through the cache, in two chunks (prefill + the
// rest), give the golden PyTorch logits at every position.
TEST_P(IncrementalLogits, MatchPyTorchGolden) {
  const SafetensorsModel golden = SafetensorsModel::open(kParity + GetParam() + "/golden.safetensors");
  Model m(ModelConfig::from_file(kParity + GetParam() + "/config.json"));
  load_weights(m, golden, "param.");
  const TensorInfo& ids_t = golden.get("input_ids");
  const int B = int(ids_t.shape[0]), T = int(ids_t.shape[1]), V = m.config().vocab_size;
  const int32_t* ids = reinterpret_cast<const int32_t*>(ids_t.data);
  const std::vector<float> want = golden.read_f32("logits");
  auto cache = m.make_cache(B, T);
  const int split = 3;
  std::vector<float> got(size_t(B) * T * V);
  for (int part = 0; part < 2; part++) {
    InferBatch batch;
    for (int b = 0; b < B; b++)
      for (int t = part ? split : 0; t < (part ? T : split); t++)
        batch.add(ids[b * T + t], b, t, true);
    const float* logits = m.forward_rows(batch, *cache);
    for (size_t r = 0; r < batch.size(); r++)
      std::copy(logits + r * V, logits + (r + 1) * V,
                got.begin() + (size_t(batch.slots[r]) * T + batch.positions[r]) * V);
  }
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < want.size(); i++) {
    max_diff = std::max(max_diff, double(std::fabs(got[i] - want[i])));
    max_ref = std::max(max_ref, double(std::fabs(want[i])));
  }
  EXPECT_LT(max_diff / max_ref, 2e-5);
  EXPECT_EQ(cache->length[0], T);
}

INSTANTIATE_TEST_SUITE_P(Architectures, IncrementalLogits,
                         ::testing::Values("gpt2", "llama_gqa", "qwen2_bias", "qwen3_qknorm",
                                           "mistral"));

std::vector<std::vector<int32_t>> some_prompts(int V) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; i++) {
    std::vector<int32_t> p(3 + 4 * i);
    for (size_t t = 0; t < p.size(); t++) p[t] = int32_t((t * 31 + i * 7 + 1) % V);
    prompts.push_back(p);
  }
  return prompts;
}

TEST(Generator, CachedGreedyEqualsRecomputingTheWindow) {
  for (const char* preset : {"gpt2-tiny", "llama-tiny"}) {
    Model m(model_preset(preset));
    m.init_weights(3);
    Generator gen(m, 2, 64);
    GenerateOptions o;
    o.sampling.temperature = 0.0f;
    o.max_tokens = 20;
    const auto prompts = some_prompts(m.config().vocab_size);
    const auto out = gen.generate(prompts, o);
    for (size_t i = 0; i < prompts.size(); i++) {
      Rng rng(0);
      const auto naive = generate(m, prompts[i], 20, 64, SamplingOptions{0.0f, 0, 1.0f}, rng);
      EXPECT_EQ(out[i].tokens, naive) << preset << " prompt " << i;
      EXPECT_EQ(out[i].finish_reason, "length");
    }
  }
}

TEST(Generator, BatchingDoesNotChangeSampledResults) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(4);
  GenerateOptions o;
  o.sampling = SamplingOptions{0.9f, 40, 0.95f, 0.02f};
  o.max_tokens = 16;
  o.seed = 11;
  o.top_logprobs = 5;
  const auto prompts = some_prompts(m.config().vocab_size);
  Generator one(m, 1, 64), four(m, 4, 64);
  const auto a = one.generate(prompts, o);
  const auto b = four.generate(prompts, o);
  for (size_t i = 0; i < prompts.size(); i++) {
    EXPECT_EQ(a[i].tokens, b[i].tokens) << i;
    ASSERT_EQ(b[i].logprobs.size(), b[i].tokens.size());
    for (const TokenLogprobs& lp : b[i].logprobs) {
      double mass = lp.tail_mass;
      for (float l : lp.top_logprobs) mass += std::exp(double(l));
      EXPECT_NEAR(mass, 1.0, 1e-5);
      EXPECT_TRUE(std::is_sorted(lp.top_logprobs.rbegin(), lp.top_logprobs.rend()));
      EXPECT_LE(lp.logprob, 0.0f);
    }
  }
}

// Bans one token: it must never be sampled, and the processor sees the growing context.
class BanToken : public LogitsProcessor {
 public:
  explicit BanToken(int32_t id) : id_(id) {}
  void process(int, const std::vector<int32_t>& context, float* logits, int) override {
    logits[id_] = -INFINITY;
    max_context = std::max(max_context, context.size());
  }
  int32_t id_;
  size_t max_context = 0;
};

TEST(Generator, LogitsProcessorAndStopRules) {
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(5);
  Generator gen(m, 3, 64);
  GenerateOptions o;
  o.sampling.temperature = 0.0f;
  o.max_tokens = 12;
  const auto prompts = some_prompts(m.config().vocab_size);
  const auto plain = gen.generate(prompts, o);
  const int32_t banned = plain[0].tokens[0];
  BanToken ban(banned);
  const auto out = gen.generate(prompts, o, &ban);
  for (const auto& g : out)
    for (int32_t t : g.tokens) EXPECT_NE(t, banned);
  EXPECT_EQ(ban.max_context, prompts.back().size() + 11);

  o.stop_ids = {plain[1].tokens[2]};
  const auto stopped = gen.generate(prompts, o);
  EXPECT_EQ(stopped[1].finish_reason, "stop");
  EXPECT_LE(stopped[1].tokens.size(), 3u);
  o.stop_ids.clear();
  o.stop = [](int, const std::vector<int32_t>& g) { return g.size() == 4; };
  for (const auto& g : gen.generate(prompts, o)) {
    EXPECT_EQ(g.tokens.size(), 4u);
    EXPECT_EQ(g.finish_reason, "stop");
  }
}

TEST(Generator, ScoreMatchesTheTrainingLoss) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(6);
  std::vector<int32_t> ids(40);
  for (size_t t = 0; t < ids.size(); t++) ids[t] = int32_t((t * 17 + 3) % 256);
  Generator gen(m, 1, 64);
  const auto scored = gen.score(ids, 3);
  ASSERT_EQ(scored.size(), ids.size() - 1);
  // Mean negative log-likelihood from the training path.
  const int T = int(ids.size()) - 1, V = m.config().vocab_size;
  const float* logits = m.forward(ids.data(), 1, T);
  double want = 0.0, got = 0.0;
  for (int t = 0; t < T; t++) {
    const float* row = logits + size_t(t) * V;
    double mx = *std::max_element(row, row + V), sum = 0.0;
    for (int v = 0; v < V; v++) sum += std::exp(double(row[v]) - mx);
    want -= double(row[ids[t + 1]]) - mx - std::log(sum);
    got -= scored[t].logprob;
  }
  EXPECT_NEAR(got / T, want / T, 1e-4);
}

// A gpt2 model of n_positions P completes a sequence to P + 1 tokens: the last one is sampled,
// never run, so the cache needs P positions (on-policy distillation at seq-len = n_positions
// failed with "context of 257 tokens exceeds the model's n_positions 256" before).
TEST(Generator, SequenceOneLongerThanThePositionsFits) {
  ModelConfig c = model_preset("gpt2-tiny");
  c.max_position = 24;
  Model m(c);
  m.init_weights(4);
  Generator gen(m, 2, 25);
  GenerateOptions o;
  o.sampling.temperature = 0.0f;
  o.max_tokens = 100;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5, 6, 7, 8}};
  const auto out = gen.generate(prompts, o);
  for (size_t i = 0; i < prompts.size(); i++) {
    EXPECT_EQ(prompts[i].size() + out[i].tokens.size(), 25u);
    Rng rng(0);
    // The same greedy tokens as recomputing the (at most 24-token) window each time.
    EXPECT_EQ(out[i].tokens, generate(m, prompts[i], int(out[i].tokens.size()), 24,
                                      SamplingOptions{0.0f, 0, 1.0f}, rng));
  }
  EXPECT_THROW(Generator(m, 1, 26), Error);  // 25 positions would be needed
}

// The step-wise decoder: prompts prefilled in chunks of 3 rows per step sample the same tokens as
// whole-prompt prefill, and a sequence admitted while others decode (its prompt rows riding with
// their decode rows) samples what it samples alone.
TEST(BatchDecoder, ChunkedPrefillAndLateAdmissionSampleTheSameTokens) {
  Model m(model_preset("llama-tiny"));
  m.init_weights(12);
  const auto prompts = some_prompts(m.config().vocab_size);
  auto request = [&](int i) {
    DecodeRequest r;
    r.id = i;
    r.prompt = prompts[size_t(i)];
    r.max_tokens = 12;
    r.sampling = SamplingOptions{0.9f, 0, 0.95f, 0.0f};
    r.seed = 50 + uint64_t(i);
    return r;
  };
  auto alone = [&](int i, int chunk) {
    BatchDecoder dec(m, 1, 64, DecoderOptions{{}, chunk});
    EXPECT_TRUE(dec.admit(request(i)));
    std::vector<int32_t> out;
    int steps = 0;
    while (dec.live() > 0) {
      steps++;
      for (const DecodedToken& d : dec.step()) {
        out.push_back(d.token);
        if (d.at_limit) dec.finish(d.id);
      }
    }
    EXPECT_EQ(steps, 12 + (chunk ? (int(prompts[size_t(i)].size()) + chunk - 1) / chunk - 1 : 0));
    return out;
  };
  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < 5; i++) {
    want.push_back(alone(i, 0));
    EXPECT_EQ(alone(i, 3), want.back()) << i;
  }
  // Prompt i joins at step 2 * i.
  BatchDecoder dec(m, 5, 64, DecoderOptions{{}, 3});
  std::vector<std::vector<int32_t>> got(5);
  int next = 0;
  for (int step = 0; next < 5 || dec.live() > 0; step++) {
    if (next < 5 && step == 2 * next) {
      ASSERT_TRUE(dec.admit(request(next++)));
    }
    for (const DecodedToken& d : dec.step()) {
      got[size_t(d.id)].push_back(d.token);
      if (d.at_limit) dec.finish(d.id);
    }
  }
  EXPECT_EQ(got, want);

  // The same with the serving engine's schedule: a step of the sequences whose prompt's last
  // chunk is due, alone, before each full step. It runs their last chunks only (every token it
  // samples is a first token, and the others get none), and nothing sampled changes.
  BatchDecoder firsts(m, 5, 64, DecoderOptions{{}, 3});
  std::vector<std::vector<int32_t>> got2(5);
  int first_steps = 0;
  next = 0;
  for (int step = 0; next < 5 || firsts.live() > 0; step++) {
    if (next < 5 && step == 2 * next) {
      ASSERT_TRUE(firsts.admit(request(next++)));
    }
    const int due = firsts.first_tokens_due();
    if (due > 0 && due < firsts.live()) {
      const auto& out = firsts.step(nullptr, BatchDecoder::Rows::kFirstTokens);
      ASSERT_EQ(int(out.size()), due);
      for (const DecodedToken& d : out) {
        EXPECT_EQ(d.generated, 1) << "sequence " << d.id;
        got2[size_t(d.id)].push_back(d.token);
        if (d.at_limit) firsts.finish(d.id);
      }
      EXPECT_EQ(firsts.last_decode_rows(), 0);
      first_steps++;
    }
    for (const DecodedToken& d : firsts.step()) {
      got2[size_t(d.id)].push_back(d.token);
      if (d.at_limit) firsts.finish(d.id);
    }
  }
  EXPECT_EQ(got2, want);
  EXPECT_EQ(first_steps, 4);  // every prompt but the first joins others that are running
}

TEST(Generator, PromptTooLongIsAClearError) {
  Model m(model_preset("gpt2-tiny"));
  Generator gen(m, 1, 16);
  std::vector<int32_t> p(16, 1);
  try {
    gen.generate({p}, GenerateOptions{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "prompt 0 has 16 tokens: no room to generate within the context of 16");
  }
}

// ---- sampling ----

// The cut the sampler promises, computed the slow way: every token ranked by a full sort (higher
// logit first, ties by lower id), top_k, then min_p and top_p (of top_k's mass) within it.
// Returns token -> probability over the kept tokens.
std::map<int32_t, double> naive_sampling(const std::vector<float>& logits,
                                         const SamplingOptions& o) {
  const int V = int(logits.size());
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  const int k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::vector<double> p(k);
  double sum = 0.0;
  for (int i = 0; i < k; i++)
    sum += p[i] = std::exp((logits[order[i]] - logits[order[0]]) / o.temperature);
  int keep = k;
  while (o.min_p > 0.0f && keep > 1 && p[keep - 1] < o.min_p * p[0]) keep--;
  if (o.top_p < 1.0f) {
    double mass = 0.0;
    for (int i = 0; i < keep; i++) {
      mass += p[i] / sum;
      if (mass >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (int i = 0; i < keep; i++) total += p[i];
  std::map<int32_t, double> out;
  for (int i = 0; i < keep; i++) out[order[i]] = p[i] / total;
  return out;
}

// sampling_candidates (which ranks only what the cut needs) keeps the same tokens with the same
// probabilities as the full sort, over vocabularies from 1 to 40k, flat and peaked logits, ties,
// and every cut alone and together.
TEST(Sampling, CandidatesMatchTheFullSortOracle) {
  std::mt19937 rng(77);
  int cases = 0;
  for (int V : {1, 2, 7, 300, 5000, 40000})
    for (float spread : {0.1f, 3.0f, 12.0f})
      for (bool ties : {false, true}) {
        std::normal_distribution<float> nd(0.0f, spread);
        std::vector<float> logits(static_cast<size_t>(V));
        for (float& l : logits) l = ties ? std::round(nd(rng)) : nd(rng);
        for (const SamplingOptions& o :
             {SamplingOptions{0.8f, 0, 1.0f, 0.0f}, SamplingOptions{1.0f, 5, 1.0f, 0.0f},
              SamplingOptions{0.7f, 0, 0.9f, 0.0f}, SamplingOptions{1.3f, 0, 0.999f, 0.0f},
              SamplingOptions{1.0f, 0, 1.0f, 0.05f}, SamplingOptions{0.9f, 40, 0.95f, 0.02f},
              SamplingOptions{2.0f, V + 3, 0.55f, 0.0f}, SamplingOptions{0.5f, 1, 1.0f, 0.0f}}) {
          SCOPED_TRACE(::testing::Message() << "V " << V << " spread " << spread << " ties " << ties
                                            << " T " << o.temperature << " top_k " << o.top_k
                                            << " top_p " << o.top_p << " min_p " << o.min_p);
          const auto want = naive_sampling(logits, o);
          const SamplingCandidates got = sampling_candidates(logits.data(), V, o);
          ASSERT_EQ(got.ids.size(), got.weights.size());
          double total = 0.0;
          for (float w : got.weights) total += w;
          std::map<int32_t, double> have;
          for (size_t i = 0; i < got.ids.size(); i++) have[got.ids[i]] = got.weights[i] / total;
          ASSERT_EQ(have.size(), got.ids.size()) << "a token listed twice";
          ASSERT_EQ(have.size(), want.size());
          for (const auto& [t, p] : want) {
            ASSERT_TRUE(have.count(t)) << "token " << t << " missing";
            EXPECT_NEAR(have[t], p, 1e-6 + 1e-5 * p) << "token " << t;
          }
          cases++;
        }
      }
  EXPECT_EQ(cases, 6 * 3 * 2 * 8);
}

// Draws follow the candidates' probabilities: 200k draws over five tokens land within 5 sigma
// of each probability, and tokens the cut drops are never drawn.
TEST(Sampling, DrawsFollowTheProbabilities) {
  const std::vector<float> logits = {1.0f, 3.0f, 0.5f, 2.0f, -4.0f};
  for (const SamplingOptions& o :
       {SamplingOptions{1.0f, 0, 1.0f, 0.0f}, SamplingOptions{0.7f, 0, 0.8f, 0.0f}}) {
    const auto want = naive_sampling(logits, o);
    Rng rng(5);
    const int n = 200000;
    std::vector<int> count(logits.size());
    for (int i = 0; i < n; i++)
      count[size_t(sample_token(logits.data(), int(logits.size()), o, rng))]++;
    for (int t = 0; t < int(logits.size()); t++) {
      const double p = want.count(t) ? want.at(t) : 0.0;
      const double sigma = std::sqrt(n * p * (1 - p));
      EXPECT_NEAR(count[size_t(t)], n * p, 5 * sigma + 1e-9)
          << "token " << t << " top_p " << o.top_p;
    }
  }
  // Masked tokens (-inf, as logits processors mask) weigh exactly nothing.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> masked = {-inf, 0.0f, -inf, 1.0f, -200.0f};
  for (const SamplingOptions& o :
       {SamplingOptions{1.0f, 0, 1.0f, 0.0f}, SamplingOptions{1.0f, 3, 1.0f, 0.0f}}) {
    const SamplingCandidates c = sampling_candidates(masked.data(), 5, o);
    for (size_t i = 0; i < c.ids.size(); i++) {
      if (c.ids[i] != 1 && c.ids[i] != 3) {
        EXPECT_EQ(c.weights[i], 0.0f) << "token " << c.ids[i];
      }
    }
  }
  // vocab_limit: ids past it are never candidates, greedy or not (the most likely, id 1, is cut).
  for (const SamplingOptions& o :
       {SamplingOptions{1.0f, 0, 1.0f, 0.0f, 1}, SamplingOptions{0.7f, 2, 0.9f, 0.0f, 1}}) {
    const SamplingCandidates c = sampling_candidates(logits.data(), 5, o);
    ASSERT_EQ(c.ids, std::vector<int32_t>{0});
  }
  {
    Rng r(2);
    EXPECT_EQ(sample_token(logits.data(), 5, SamplingOptions{0.0f, 0, 1.0f, 0.0f, 1}, r), 0);
    // Within the first 3 the most likely is still id 1; id 3 (logit 2) is never drawn.
    EXPECT_EQ(sample_token(logits.data(), 5, SamplingOptions{0.0f, 0, 1.0f, 0.0f, 3}, r), 1);
    for (int i = 0; i < 200; i++)
      EXPECT_LT(sample_token(logits.data(), 5, SamplingOptions{2.0f, 0, 1.0f, 0.0f, 3}, r), 3);
  }
  // Greedy, and a temperature too small to divide by, take the most likely token.
  Rng rng(1);
  EXPECT_EQ(sample_token(logits.data(), 5, SamplingOptions{0.0f, 0, 1.0f, 0.0f}, rng), 1);
  EXPECT_EQ(sample_token(logits.data(), 5, SamplingOptions{1e-45f, 0, 1.0f, 0.0f}, rng), 1);
}

}  // namespace
}  // namespace distill
