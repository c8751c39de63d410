// distill eval: held-out metrics against independent computations from Model::forward (a model
// against itself: KL 0 and agreement 1; perplexity = exp(mean NLL); KL and agreement between two
// models), the held-out split and windows, the task scorer on hand-made strings, task files and
// their errors, greedy task generation against an independent greedy loop, vocabulary and
// tokenizer mismatches, training curves, report.json contents and a well-formed report.html,
// and the CLI end to end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/text_corpus.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/svg.h"
#include "eval/task_builder.h"
#include "eval/task_suite.h"
#include "formats/model_dir.h"
#include "infer/sampler.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

// A small byte-level model shape (fast enough to evaluate many times in a test).
ModelConfig tiny_config(const std::string& preset, int layers, int hidden) {
  ModelConfig c = model_preset(preset);
  c.num_layers = layers;
  c.hidden_size = hidden;
  c.num_heads = 2;
  c.num_kv_heads = c.arch == Arch::Llama ? 1 : 2;
  c.head_dim = hidden / 2;
  c.intermediate_size = c.arch == Arch::Llama ? 3 * hidden : 4 * hidden;
  c.max_position = 96;
  return c;
}

// Saves a freshly initialised model; byte-level unless `bytes_metadata` is false.
std::string save_model(const fs::path& dir, const ModelConfig& c, uint64_t seed,
                       bool bytes_metadata = true) {
  Model m(c);
  m.init_weights(seed);
  // Larger weights than GPT-2's init make the distributions peaked, so models disagree.
  for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 4.0f;
  SaveModelOptions o;
  if (bytes_metadata) o.metadata = {{"distill_tokenizer", "distill-bytes-v1"}};
  save_model_dir(m, dir.string(), o);
  return dir.string();
}

class EvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("distill-eval-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
            std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  // Sentences from a little grammar, ~12 KB.
  std::string corpus() {
    const char* a[] = {"the king", "a shepherd", "the people", "my son"};
    const char* b[] = {"went unto", "spake to", "blessed", "saw"};
    const char* c[] = {"the city", "the river", "his brethren", "the field"};
    Rng rng(7);
    std::string text;
    while (text.size() < 12000)
      text += fmt::format("{} {} {}{}", a[rng.below(4)], b[rng.below(4)], c[rng.below(4)],
                          rng.below(3) == 0 ? ".\n" : ", and ");
    return write("corpus.txt", text);
  }

  EvalOptions options(const std::string& text) {
    EvalOptions o;
    o.text_files = {text};
    o.val_fraction = 0.1;
    o.seq_len = 32;
    o.max_windows = 1000;
    o.batch = 4;
    o.cost.repeats = 1;
    o.cost.min_seconds = 0;
    o.cost.gen_tokens = 8;
    o.cost.prompt_tokens = 16;
    return o;
  }

  fs::path dir_;
};

// Log-softmax of a row in double precision, written here apart from the library.
std::vector<double> log_softmax(const float* z, int V) {
  double mx = z[0];
  for (int i = 1; i < V; i++) mx = std::max(mx, double(z[i]));
  double s = 0;
  for (int i = 0; i < V; i++) s += std::exp(double(z[i]) - mx);
  std::vector<double> out(V);
  for (int i = 0; i < V; i++) out[i] = double(z[i]) - mx - std::log(s);
  return out;
}

std::string check_balanced(const std::string& html, int* svg_count, int* svg_with_viewbox);

struct Reference {
  double mean_nll = 0, kl = 0, agreement = 0;
  int64_t positions = 0;
};

// Teacher-forced metrics over consecutive windows of T+1 tokens (stride T) of `tokens`, one
// window per Model::forward call.
Reference reference_metrics(Model& teacher, Model& model, const std::vector<int32_t>& tokens,
                            int T) {
  const int V = model.config().vocab_size;
  Reference r;
  double nll = 0, kl = 0;
  int64_t agree = 0;
  for (size_t start = 0; start + T + 1 <= tokens.size(); start += T) {
    const std::vector<int32_t> ids(tokens.begin() + start, tokens.begin() + start + T);
    const float* tl = teacher.forward(ids.data(), 1, T);
    const std::vector<float> t(tl, tl + size_t(T) * V);
    const float* z = model.forward(ids.data(), 1, T);
    for (int i = 0; i < T; i++) {
      const auto lq = log_softmax(z + size_t(i) * V, V), lp = log_softmax(&t[size_t(i) * V], V);
      nll -= lq[tokens[start + i + 1]];
      for (int v = 0; v < V; v++) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
      agree += std::max_element(lq.begin(), lq.end()) - lq.begin() ==
               std::max_element(lp.begin(), lp.end()) - lp.begin();
      r.positions++;
    }
  }
  r.mean_nll = nll / double(r.positions);
  r.kl = kl / double(r.positions);
  r.agreement = double(agree) / double(r.positions);
  return r;
}

std::vector<int32_t> held_out_bytes(const std::string& path, double fraction) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  const size_t n = size_t(double(all.size()) * fraction);
  return ByteTokenizer::encode(std::string_view(all).substr(all.size() - n));
}

TEST_F(EvalTest, ModelAgainstItselfHasZeroKlAndFullAgreement) {
  const std::string text = corpus();
  const std::string t = save_model(dir_ / "t", tiny_config("gpt2-tiny", 2, 32), 1);
  EvalOptions o = options(text);
  o.models = eval_model_list(t, "", {}, {"copy=" + t});
  o.measure_cost = false;
  const EvalReport r = run_eval(o);
  ASSERT_EQ(r.models.size(), 2u);
  for (const ModelReport& m : r.models) {
    EXPECT_LT(std::fabs(m.quality.kl_to_teacher), 1e-9) << m.name;
    EXPECT_GE(m.quality.kl_to_teacher, 0.0) << m.name;  // never a rounding negative
    EXPECT_EQ(m.quality.top1_agreement, 1.0) << m.name;
    EXPECT_GT(m.quality.positions, 0);
  }
  EXPECT_DOUBLE_EQ(r.models[0].quality.perplexity, r.models[1].quality.perplexity);
  EXPECT_EQ(r.models[1].role, "model");
  EXPECT_EQ(r.models[1].name, "copy");
}

TEST_F(EvalTest, PerplexityKlAndAgreementMatchAnIndependentComputation) {
  const std::string text = corpus();
  const std::string t = save_model(dir_ / "t", tiny_config("gpt2-tiny", 2, 32), 1);
  const std::string s = save_model(dir_ / "s", tiny_config("llama-tiny", 1, 16), 2);
  EvalOptions o = options(text);
  o.models = eval_model_list(t, s, {}, {});
  o.measure_cost = false;
  const EvalReport r = run_eval(o);

  const std::vector<int32_t> tokens = held_out_bytes(text, 0.1);
  auto teacher = load_model_dir(t), student = load_model_dir(s);
  const Reference rt = reference_metrics(*teacher, *teacher, tokens, 32);
  const Reference rs = reference_metrics(*teacher, *student, tokens, 32);
  const QualityMetrics& qt = r.models[0].quality;
  const QualityMetrics& qs = r.models[1].quality;
  EXPECT_EQ(qt.positions, rt.positions);
  EXPECT_EQ(qs.positions, int64_t((tokens.size() - 1) / 32) * 32);
  EXPECT_EQ(qs.windows, qs.positions / 32);
  EXPECT_NEAR(qt.perplexity, std::exp(rt.mean_nll), 1e-5 * std::exp(rt.mean_nll));
  EXPECT_NEAR(qs.perplexity, std::exp(rs.mean_nll), 1e-5 * std::exp(rs.mean_nll));
  EXPECT_NEAR(qs.mean_nll, rs.mean_nll, 1e-5);
  EXPECT_GT(rs.kl, 0.05);  // the models really differ, so the comparison means something
  EXPECT_NEAR(qs.kl_to_teacher, rs.kl, 1e-4 * rs.kl + 1e-7);
  EXPECT_NEAR(qs.top1_agreement, rs.agreement, 1e-12);
  EXPECT_LT(qs.top1_agreement, 1.0);

  // Without a task, runs or speed measurements the page still renders, saying what is missing.
  const std::string html = render_report_html(r);
  int svgs = 0, with_viewbox = 0;
  EXPECT_EQ(check_balanced(html, &svgs, &with_viewbox), "");
  EXPECT_EQ(svgs, int(report_metrics(r).size()) + 2);  // no training curves
  EXPECT_EQ(with_viewbox, svgs);
  EXPECT_NE(html.find("No runs given"), std::string::npos);
  EXPECT_EQ(html.find("id=\"examples\""), std::string::npos);
  EXPECT_NE(html.find("not measured"), std::string::npos);  // peak memory
  EXPECT_NE(html.find("Agreement with the teacher against generation speed"), std::string::npos);
}

TEST(HeldOutWindows, ConsecutiveThenEvenlySpread) {
  std::vector<int32_t> tokens(100);
  for (int i = 0; i < 100; i++) tokens[i] = i;
  const HeldOutWindows all = make_held_out_windows(tokens, 10, 50);
  ASSERT_EQ(all.count, 9);  // (100 - 1) / 10
  for (int64_t w = 0; w < all.count; w++) EXPECT_EQ(all.window(w)[0], w * 10);
  EXPECT_EQ(all.window(8)[10], 90);
  const HeldOutWindows few = make_held_out_windows(tokens, 10, 3);
  ASSERT_EQ(few.count, 3);
  EXPECT_EQ(few.window(0)[0], 0);
  EXPECT_EQ(few.window(1)[0], 44);   // 89 / 2
  EXPECT_EQ(few.window(2)[10], 99);  // the last window ends at the last token
  EXPECT_THROW(make_held_out_windows(std::vector<int32_t>(10), 10, 5), Error);
}

TEST_F(EvalTest, HeldOutSplitIsTextCorpusSplitForBytes) {
  const std::string text = corpus();
  EvalOptions o = options(text);
  const std::string held = read_held_out_text(o, true);
  const TextCorpus c = TextCorpus::load({text}, 0.1, 33);
  ASSERT_EQ(held.size(), c.val_tokens());
  std::vector<int32_t> ids(32), targets(32);
  c.val_batch(0, 1, 1, 32, ids.data(), targets.data());
  EXPECT_EQ(ids, ByteTokenizer::encode(std::string_view(held).substr(0, 32)));
  // Other tokenizers start the split at a character boundary.
  const std::string utf8 = write("u.txt", std::string(9, 'a') + "\xc3\xa9" + "bcdefghi");  // 19 B
  o.text_files = {utf8};
  o.val_fraction = 0.5;  // 9 bytes: would start inside the two-byte character
  EXPECT_EQ(read_held_out_text(o, true).size(), 9u);
  EXPECT_EQ(read_held_out_text(o, false), "bcdefghi");
  o.held_out_files = {utf8};
  EXPECT_EQ(read_held_out_text(o, false).size(), 19u);
}

TEST(TaskScorer, ExactMatchAndContainsOnStrings) {
  struct Case {
    const char* output;
    const char* answer;
    bool exact, contains;
  };
  const Case cases[] = {
      {" Paris", "Paris", true, true},
      {"Paris.", "Paris", true, true},
      {"  Paris is the capital", "Paris", true, true},
      {"Parisian", "Paris", false, true},
      {"paris", "Paris", false, false},  // case-sensitive
      {"It is Paris", "Paris", false, true},
      {"New   York\tcity", "New York", true, true},  // whitespace runs collapse
      {"42", "42", true, true},
      {"421", "42", false, true},
      {"4", "42", false, false},
      {"", "42", false, false},
      {"caf\xc3\xa9s", "caf", false, true},        // a UTF-8 letter continues the word
      {"\n\nRome\nParis", "Paris", false, false},  // only the first non-blank line counts
  };
  for (const Case& c : cases) {
    const std::string cont = task_continuation(c.output);
    EXPECT_EQ(task_exact_match(cont, c.answer), c.exact) << '"' << c.output << '"';
    EXPECT_EQ(task_contains(cont, c.answer), c.contains) << '"' << c.output << '"';
  }
  EXPECT_EQ(task_continuation("\n\nRome\nParis"), "\n\nRome");
  EXPECT_EQ(normalize_task_text("  a \n b\t\tc  "), "a b c");
  const std::vector<TaskExample> ex = {{"p", "Paris", 1}, {"p", "Rome", 2}, {"p", "Oslo", 3}};
  const TaskScore s = score_task_outputs(ex, {"Paris!", "Romeo", "no"}, {2, 3, 4});
  EXPECT_EQ(s.prompts, 3);
  EXPECT_EQ(s.exact, 1);
  EXPECT_EQ(s.contains, 2);
  EXPECT_DOUBLE_EQ(s.exact_rate, 1.0 / 3);
  EXPECT_DOUBLE_EQ(s.contains_rate, 2.0 / 3);
  EXPECT_EQ(s.outcomes[2].generated_tokens, 4);
}

TEST_F(EvalTest, TaskFileParsesAndNamesTheBadLine) {
  const std::string good =
      write("good.jsonl",
            "{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n\n"
            "{\"prompt\": \"Capital:\", \"answer\": \"Paris\", \"id\": 7}\r\n");
  const auto ex = load_task_file(good);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[1].prompt, "Capital:");
  EXPECT_EQ(ex[1].answer, "Paris");
  EXPECT_EQ(ex[1].line, 3);
  const struct {
    const char* text;
    const char* message;
  } bad[] = {
      {"{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"a\", \"answer\"\n",
       "line 2: not valid JSON"},
      {"\n\n{\"prompt\": \"a\"}\n", "line 3: missing \"answer\""},
      {"{\"answer\": \"a\"}\n", "line 1: missing \"prompt\""},
      {"{\"prompt\": \"a\", \"answer\": 4}\n",
       "line 1: \"answer\" must be a string, found a number"},
      {"[1, 2]\n", "line 1: expected a JSON object"},
      {"{\"prompt\": \"a\", \"answer\": \"  \"}\n", "line 1: \"answer\" is blank"},
      {"\n  \n", "no task examples"},
  };
  for (const auto& b : bad) {
    const std::string path = write("bad.jsonl", b.text);
    try {
      load_task_file(path);
      ADD_FAILURE() << "no error for " << b.text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(b.message), std::string::npos) << e.what();
    }
  }
}

TEST_F(EvalTest, TaskRunScoresTheGreedyContinuation) {
  const std::string t = save_model(dir_ / "t", tiny_config("gpt2-tiny", 2, 32), 3);
  auto model = load_model_dir(t);
  const ByteLevelTokenizer tok;
  // The greedy continuation by the plain (uncached) generation loop of infer/sampler.h.
  const std::vector<std::string> prompts = {"the king ", "and the ", "my son"};
  std::vector<TaskExample> examples;
  std::vector<std::string> expected;
  for (size_t i = 0; i < prompts.size(); i++) {
    Rng rng(0);
    SamplingOptions greedy;
    greedy.temperature = 0.0f;
    const auto ids = generate(*model, tok.encode(prompts[i]), 6, 96, greedy, rng);
    expected.push_back(task_continuation(tok.decode(ids)));
    const std::string answer = normalize_task_text(expected.back());
    // Example 0 expects exactly the output; example 1 something it never says.
    examples.push_back(
        {prompts[i], i == 1 || answer.empty() ? "\x01never" : answer, int64_t(i + 1)});
  }
  TaskRunOptions o;
  o.max_new_tokens = 6;
  o.batch = 2;
  const TaskScore s = run_task_suite(*model, tok, examples, o);
  ASSERT_EQ(s.outcomes.size(), 3u);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(s.outcomes[i].continuation, expected[i]) << i;
  EXPECT_EQ(s.outcomes[0].exact, examples[0].answer != "\x01never");
  EXPECT_FALSE(s.outcomes[1].exact);
  EXPECT_FALSE(s.outcomes[1].contains);
  EXPECT_LE(s.outcomes[0].generated_tokens, 6);
  // A prompt that leaves no room in the context names the file and line.
  o.source = "tasks.jsonl";
  o.model_name = "teacher";
  std::vector<TaskExample> long_prompt = {{std::string(95, 'a'), "x", 9}};
  try {
    run_task_suite(*model, tok, long_prompt, o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tasks.jsonl line 9"), std::string::npos) << e.what();
  }
}

// A model whose vocabulary is padded past its tokenizer's answers with the tokenizer's ids only:
// the padding has no text (before, a greedy padding id stopped the run when it was decoded).
TEST_F(EvalTest, TaskRunNeverGeneratesPaddingIds) {
  ModelConfig c = tiny_config("gpt2-tiny", 2, 32);
  const ByteLevelTokenizer tok;
  c.vocab_size = tok.vocab_size() + 64;
  const std::vector<int32_t> prompt = tok.encode("the king ");
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  // The premise: a model whose unrestricted greedy continuation holds a padding id.
  std::unique_ptr<Model> m;
  for (uint64_t seed = 1; seed <= 50 && !m; seed++) {
    auto candidate = std::make_unique<Model>(c);
    candidate->init_weights(seed);
    for (size_t i = 0; i < candidate->num_params(); i++) candidate->params()[i] *= 4.0f;
    Rng rng(0);
    for (int32_t id : generate(*candidate, prompt, 6, 96, greedy, rng))
      if (id >= tok.vocab_size()) m = std::move(candidate);
  }
  ASSERT_TRUE(m) << "no seed whose greedy continuation holds a padding id";
  TaskRunOptions o;
  o.max_new_tokens = 6;
  const TaskScore s = run_task_suite(*m, tok, {{"the king ", "x", 1}}, o);
  ASSERT_EQ(s.outcomes.size(), 1u);
  EXPECT_GT(s.outcomes[0].generated_tokens, 0);
}

TEST_F(EvalTest, DifferentVocabulariesAreAnErrorNamingBoth) {
  const std::string text = corpus();
  const std::string t = save_model(dir_ / "teacher", tiny_config("gpt2-tiny", 1, 16), 1);
  ModelConfig big = tiny_config("gpt2-tiny", 1, 16);
  big.vocab_size = 300;
  const std::string s = save_model(dir_ / "student", big, 1);
  EvalOptions o = options(text);
  o.models = eval_model_list(t, s, {}, {});
  try {
    run_eval(o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(t), std::string::npos) << what;
    EXPECT_NE(what.find(s), std::string::npos) << what;
    EXPECT_NE(what.find("300"), std::string::npos) << what;
    EXPECT_NE(what.find("256"), std::string::npos) << what;
    EXPECT_NE(what.find("vocabulary"), std::string::npos) << what;
  }
  // A model dir with no tokenizer and no byte-level marker: the error names it.
  const std::string unknown =
      save_model(dir_ / "unknown", tiny_config("gpt2-tiny", 1, 16), 1, false);
  o.models = eval_model_list(t, unknown, {}, {});
  try {
    run_eval(o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(unknown), std::string::npos) << e.what();
  }
  EXPECT_THROW(eval_model_list(t, s, {}, {"student=" + s}), Error);  // duplicate name
  EXPECT_THROW(eval_model_list(t, "", {}, {"noequals"}), Error);
}

TEST(ByteLevelTokenizerAdapter, RoundTripAndIdentity) {
  const ByteLevelTokenizer tok;
  const std::string text = "caf\xc3\xa9\n\x01";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.encode("A"), std::vector<int32_t>{65});
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_EQ(tok.fingerprint(), ByteTokenizer::kFingerprint);
  EXPECT_EQ(tok.token_text(66), "B");
  EXPECT_EQ(tok.token_id("C"), 67);
  EXPECT_FALSE(tok.token_id("CD").has_value());
  EXPECT_FALSE(tok.eos_id().has_value());
  EXPECT_THROW(tok.token_text(256), Error);
}

TEST_F(EvalTest, ModelTokenizerFromWeightsMetadata) {
  const ModelConfig c = tiny_config("gpt2-tiny", 1, 16);
  const std::string named = save_model(dir_ / "named", c, 1);  // "distill-bytes-v1"
  Model m(c);
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir_ / "hex").string(), o);
  EXPECT_EQ(load_model_tokenizer(named)->kind(), "bytes");
  EXPECT_EQ(load_model_tokenizer((dir_ / "hex").string())->kind(), "bytes");
  o.metadata = {{"distill_tokenizer", "something-else"}};
  save_model_dir(m, (dir_ / "other").string(), o);
  try {
    load_model_tokenizer((dir_ / "other").string());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("something-else"), std::string::npos) << e.what();
  }
}

TEST_F(EvalTest, RunCurvesReadMetricsJsonl) {
  const fs::path run = dir_ / "run";
  fs::create_directories(run);
  std::ofstream(run / "metrics.jsonl")
      << "{\"step\":1,\"loss\":5.5,\"lr\":0.001}\n{\"step\":2,\"loss\":4.0,\"lr\":0.001}\n"
         "{\"step\":2,\"val_loss\":4.25}\n{\"step\":3,\"loss\":3.5,\"lr\":0.001}\n{\"step\":4,\"lo";
  const RunCurve c = load_run_curve("kd", run.string());
  EXPECT_EQ(c.loss, (std::vector<std::pair<double, double>>{{1, 5.5}, {2, 4.0}, {3, 3.5}}));
  EXPECT_EQ(c.val_loss, (std::vector<std::pair<double, double>>{{2, 4.25}}));
  const std::string bad =
      write("bad.jsonl", "{\"step\":1,\"loss\":5}\n{\"step\":\"x\",\"loss\":5}\n");
  try {
    load_run_curve("bad", bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad + " line 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_run_curve("missing", (dir_ / "nope").string()), Error);
}

TEST(ReportFormat, NumbersAndTicks) {
  EXPECT_EQ(format_sig(3.14159), "3.142");
  EXPECT_EQ(format_sig(255.996), "256.0");
  EXPECT_EQ(format_sig(9.99996), "10.00");
  EXPECT_EQ(format_sig(0.0123456), "0.01235");
  EXPECT_EQ(format_sig(0), "0");
  EXPECT_EQ(format_percent(0.8751), "87.5%");
  EXPECT_EQ(format_si(1234567), "1.23M");
  EXPECT_EQ(format_bytes(3 * 1024 * 1024), "3.00 MiB");
  const svg::Ticks t = svg::linear_ticks(0, 0.87, 5);
  EXPECT_EQ(t.values, (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0}));
  EXPECT_EQ(svg::tick_label(t.values[3], t.step), "0.6");
  const svg::Ticks l = svg::log_ticks(3e5, 4e6);
  EXPECT_EQ(l.values.front(), 5e5);
  EXPECT_EQ(l.values.back(), 2e6);
  EXPECT_EQ(svg::tick_label(2e6, 0), "2M");
  EXPECT_EQ(svg::escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
  // Byte-level models emit any byte: invalid UTF-8 becomes U+FFFD, valid UTF-8 stays.
  EXPECT_EQ(svg::escape("caf\xc3\xa9 \xff\xc3(\xed\xa0\x80\x01"),
            "caf\xc3\xa9 \xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD ");
}

// Checks that every element is closed in order (void elements and "/>" aside); returns "" or
// what is wrong. Text inside <style> is skipped.
std::string check_balanced(const std::string& html, int* svg_count, int* svg_with_viewbox) {
  static const std::set<std::string> kVoid = {"meta", "br",     "hr",  "img",  "input", "link",
                                              "col",  "source", "wbr", "area", "base"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    if (html.compare(i, 4, "<!--") == 0) {
      i = html.find("-->", i);
      if (i == std::string::npos) return "unclosed comment";
      continue;
    }
    const size_t end = html.find('>', i);
    if (end == std::string::npos) return "unclosed tag at " + std::to_string(i);
    const std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty() || tag[0] == '!') continue;  // <!DOCTYPE html>
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return "</" + name + "> closes <" + (stack.empty() ? "nothing" : stack.back()) + ">";
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \n\t/"));
    if (name == "svg") {
      ++*svg_count;
      if (std::regex_search(tag, std::regex("viewBox=\"0 0 [0-9]+ [0-9]+\""))) ++*svg_with_viewbox;
    }
    if (tag.back() == '/' || kVoid.count(name)) continue;
    if (name == "style") {
      i = html.find("</style>", i);
      if (i == std::string::npos) return "unclosed style";
      i += 8;
      continue;
    }
    stack.push_back(name);
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

// A JSON value by a dotted key path ("held_out.perplexity").
const nlohmann::json* at_path(const nlohmann::json& j, const std::string& path) {
  const nlohmann::json* cur = &j;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (!cur->is_object() || !cur->contains(part)) return nullptr;
    cur = &(*cur)[part];
  }
  return cur;
}

TEST_F(EvalTest, ReportJsonAndHtml) {
  const std::string text = corpus();
  const std::string t = save_model(dir_ / "t", tiny_config("gpt2-tiny", 2, 32), 1);
  const std::string s = save_model(dir_ / "s", tiny_config("llama-tiny", 1, 16), 2);
  const std::string b = save_model(dir_ / "b", tiny_config("gpt2-tiny", 1, 16), 3);
  const fs::path run = dir_ / "run";
  fs::create_directories(run);
  {
    std::ofstream m(run / "metrics.jsonl");
    for (int step = 1; step <= 40; step++) {
      m << fmt::format("{{\"step\":{},\"loss\":{},\"lr\":0.001}}\n", step, 5.0 / std::sqrt(step));
      if (step % 10 == 0)
        m << fmt::format("{{\"step\":{},\"val_loss\":{}}}\n", step, 5.5 / std::sqrt(step));
    }
  }
  const std::string task = write("task.jsonl",
                                 "{\"prompt\": \"the king \", \"answer\": \"went\"}\n"
                                 "{\"prompt\": \"my son <b>\", \"answer\": \"saw & blessed\"}\n"
                                 "{\"prompt\": \"a shepherd\", \"answer\": \"spake\"}\n");
  EvalOptions o = options(text);
  o.max_windows = 5;
  o.models = eval_model_list(t, s, {b}, {});
  o.task_file = task;
  o.max_new_tokens = 4;
  o.runs = {{"kd", run.string()}};
  const EvalReport r = run_eval(o);
  const std::string html_path = write_report(r, (dir_ / "report").string());
  EXPECT_EQ(html_path, (dir_ / "report" / "report.html").string());

  std::ifstream jf(dir_ / "report" / "report.json");
  const nlohmann::json j = nlohmann::json::parse(jf);
  EXPECT_EQ(j["format"], "distill-eval-report");
  EXPECT_EQ(j["settings"]["seq_len"], 32);
  EXPECT_EQ(j["settings"]["tokenizer"]["kind"], "bytes");
  EXPECT_EQ(j["held_out"]["windows"], 5);
  EXPECT_EQ(j["held_out"]["positions"], 5 * 32);
  EXPECT_EQ(j["held_out"]["tokens"], int64_t(held_out_bytes(text, 0.1).size()));
  ASSERT_EQ(j["models"].size(), 3u);
  const char* names[] = {"teacher", "student", "baseline"};
  const std::string dirs[] = {t, s, b};
  for (int i = 0; i < 3; i++) {
    const nlohmann::json& m = j["models"][i];
    EXPECT_EQ(m["name"], names[i]);
    EXPECT_EQ(m["role"], names[i]);
    EXPECT_EQ(m["held_out"]["positions"], 160);
    EXPECT_EQ(m["held_out"]["windows"], 5);
    EXPECT_NEAR(m["held_out"]["perplexity"].get<double>(),
                std::exp(m["held_out"]["mean_nll"].get<double>()), 1e-9);
    EXPECT_EQ(m["task"]["prompts"], 3);
    EXPECT_EQ(m["cost"]["parameters"], int64_t(load_model_dir(dirs[i])->num_params()));
    EXPECT_EQ(m["cost"]["weights_file_bytes"],
              int64_t(fs::file_size(fs::path(dirs[i]) / "model.safetensors")));
    ASSERT_EQ(m["cost"]["throughput"].size(), 2u);
    EXPECT_EQ(m["cost"]["throughput"][0]["batch"], 1);
    EXPECT_EQ(m["cost"]["throughput"][1]["batch"], 8);
    for (const auto& tp : m["cost"]["throughput"]) {
      EXPECT_GT(tp["prompt_tokens_per_s"].get<double>(), 0);
      EXPECT_GT(tp["gen_tokens_per_s"].get<double>(), 0);
    }
    EXPECT_FALSE(m["cost"]["memory_method"].get<std::string>().empty());
  }
  EXPECT_EQ(j["models"][0]["held_out"]["kl_to_teacher"], 0.0);
  EXPECT_EQ(j["models"][0]["held_out"]["top1_agreement"], 1.0);
  EXPECT_GT(j["models"][1]["held_out"]["kl_to_teacher"].get<double>(), 0.0);
  ASSERT_EQ(j["task_examples"].size(), 3u);
  EXPECT_EQ(j["task_examples"][1]["line"], 2);
  EXPECT_TRUE(j["task_examples"][1]["outputs"].contains("student"));
  ASSERT_EQ(j["runs"].size(), 1u);
  EXPECT_EQ(j["runs"][0]["loss"].size(), 40u);
  EXPECT_EQ(j["runs"][0]["val_loss"].size(), 4u);

  std::ifstream hf(html_path);
  std::stringstream hs;
  hs << hf.rdbuf();
  const std::string html = hs.str();
  int svgs = 0, with_viewbox = 0;
  EXPECT_EQ(check_balanced(html, &svgs, &with_viewbox), "");
  const std::vector<ReportMetric> metrics = report_metrics(r);
  // One bar chart per metric, two scatter plots and the training curves.
  EXPECT_EQ(svgs, int(metrics.size()) + 3);
  EXPECT_EQ(with_viewbox, svgs);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("my son <b>"), std::string::npos);  // text is escaped
  EXPECT_NE(html.find("my son &lt;b&gt;"), std::string::npos);
  // Every number of the table, as report.json has it, is on the page.
  for (const ReportMetric& m : metrics)
    for (const nlohmann::json& model : j["models"]) {
      const nlohmann::json* v = at_path(model, m.key);
      ASSERT_NE(v, nullptr) << m.key;
      if (v->is_null()) continue;
      const std::string shown = m.format(v->get<double>());
      EXPECT_NE(html.find(">" + shown + "<"), std::string::npos) << m.key << " " << shown;
    }
  for (const char* section : {"id=\"metrics\"", "id=\"training\"", "id=\"comparison\"",
                              "id=\"tradeoff\"", "id=\"examples\"", "id=\"models\""})
    EXPECT_NE(html.find(section), std::string::npos) << section;
  // The terminal table has the same numbers.
  const std::string table = render_report_table(r);
  EXPECT_NE(table.find(format_sig(r.models[1].quality.perplexity)), std::string::npos) << table;
}

TEST_F(EvalTest, CliWritesTheReportAndReportsBadTaskLines) {
  const std::string text = corpus();
  const std::string t = save_model(dir_ / "t", tiny_config("gpt2-tiny", 1, 16), 1);
  const std::string s = save_model(dir_ / "s", tiny_config("llama-tiny", 1, 16), 2);
  const std::string task = write("task.jsonl", "{\"prompt\": \"the \", \"answer\": \"king\"}\n");
  const std::string out = (dir_ / "out").string();
  const std::string cmd = fmt::format(
      "{} eval --teacher {} --student {} --text {} --val-fraction 0.1 --task {} --out {} "
      "--seq-len 32 --max-windows 4 --max-new-tokens 4 --speed-repeats 1 --speed-seconds 0 "
      "--speed-gen-tokens 4 "
      "--speed-prompt-tokens 8 > {}/stdout 2> {}/stderr",
      DISTILL_BINARY, t, s, text, task, out, dir_.string(), dir_.string());
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  const std::string stdout_text = slurp(dir_ / "stdout");
  EXPECT_NE(stdout_text.find("Perplexity"), std::string::npos) << stdout_text;
  EXPECT_NE(stdout_text.find("report: " + out + "/report.html"), std::string::npos) << stdout_text;
  EXPECT_NE(slurp(dir_ / "stderr").find("held-out"), std::string::npos);
  EXPECT_TRUE(fs::exists(fs::path(out) / "report.json"));

  const std::string bad = write("bad.jsonl", "{\"prompt\": \"a\", \"answer\": \"b\"}\n{oops}\n");
  const std::string bad_cmd = fmt::format(
      "{} eval --teacher {} --text {} --task {} --out {} --seq-len 32 > /dev/null 2> {}/stderr",
      DISTILL_BINARY, t, text, bad, out, dir_.string());
  EXPECT_NE(std::system(bad_cmd.c_str()), 0);
  const std::string err = slurp(dir_ / "stderr");
  EXPECT_NE(err.find("error: " + bad + " line 2: not valid JSON"), std::string::npos) << err;
}

TEST(Report, GapClosedIsTheStudentsShareOfTheBaselineToTeacherGap) {
  EvalReport r;
  r.task_file = "task.jsonl";
  auto model = [](const char* role, double ppl, double exact) {
    ModelReport m;
    m.name = m.role = role;
    m.quality.perplexity = ppl;
    m.task = TaskScore{};
    m.task->exact_rate = exact;
    return m;
  };
  r.models = {model("teacher", 4.0, 0.20), model("student", 6.0, 0.16),
              model("baseline", 8.0, 0.12)};
  std::map<std::string, std::optional<double>> g;
  for (const ReportMetric& m : report_metrics(r)) g[m.key] = gap_closed(r, m);
  EXPECT_DOUBLE_EQ(*g["held_out.perplexity"], 0.5);   // lower is better: still (s-b)/(t-b)
  EXPECT_DOUBLE_EQ(*g["task.exact_match"], 0.5);
  EXPECT_FALSE(g["held_out.mean_nll"].has_value());    // teacher == baseline (both 0)
  EXPECT_FALSE(g["cost.parameters"].has_value());      // cost metrics are not a gap
  const std::string table = render_report_table(r);
  EXPECT_NE(table.find("gap closed"), std::string::npos) << table;
  EXPECT_NE(table.find("50.0%"), std::string::npos) << table;
  EXPECT_EQ(report_to_json(r)["gap_closed"]["task.exact_match"], 0.5);
  r.models.pop_back();  // no baseline: no column, no key
  EXPECT_EQ(render_report_table(r).find("gap closed"), std::string::npos);
  EXPECT_FALSE(report_to_json(r).contains("gap_closed"));
}


// ---------------------------------------------------------------- next-words task builder

TEST(NextWordsTask, AnswersFollowTheirPromptsInsideTheRightPart) {
  const fs::path dir = fs::temp_directory_path() / ("distill-nwt-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string text;
  Rng rng(5);
  const char* words[] = {"the", "Lord", "said", "unto", "Moses,", "and", "7", "it", "was", "good."};
  while (text.size() < 20000) {
    text += words[rng.below(10)];
    text += rng.below(9) == 0 ? "\n" : " ";
  }
  const std::string path = (dir / "corpus.txt").string();
  { std::ofstream(path, std::ios::binary) << text; }
  const size_t split = text.size() - size_t(double(text.size()) * 0.1);

  NextWordsTaskOptions o;
  o.val_fraction = 0.1;
  o.count = 40;
  o.context_bytes = 64;
  o.answer_words = 2;
  const auto held = make_next_words_task({path}, o);
  ASSERT_EQ(held.size(), 40u);
  std::set<std::string> ids;
  for (const auto& e : held) {
    const size_t at = std::stoul(e.id.substr(e.id.find(':') + 1));
    EXPECT_EQ(e.id.substr(0, e.id.find(':')), "corpus");
    EXPECT_TRUE(ids.insert(e.id).second) << "duplicate " << e.id;
    EXPECT_GE(at - e.prompt.size(), split) << "prompt reaches into the training part";
    EXPECT_EQ(text.substr(at - e.prompt.size(), e.prompt.size() + e.answer.size()),
              e.prompt + e.answer);
    EXPECT_LE(e.prompt.size(), 64u);
    EXPECT_EQ(e.prompt.back(), ' ');
    // Two words of letters, the second ending where the text's word ends.
    ASSERT_EQ(std::count(e.answer.begin(), e.answer.end(), ' '), 1) << e.answer;
    for (char c : e.answer) EXPECT_TRUE(c == ' ' || std::isalpha(static_cast<unsigned char>(c)));
    EXPECT_FALSE(std::isalpha(static_cast<unsigned char>(text[at + e.answer.size()])));
    EXPECT_GE(e.answer.size(), 3u);
    // A prompt starts at a word, never inside one.
    const size_t start = at - e.prompt.size();
    EXPECT_TRUE(start == 0 || std::isspace(static_cast<unsigned char>(text[start - 1])));
  }
  EXPECT_EQ(make_next_words_task({path}, o)[7].id, held[7].id);  // seeded
  o.seed = 2;
  EXPECT_NE(make_next_words_task({path}, o)[7].id, held[7].id);

  o.held_out = false;
  for (const auto& e : make_next_words_task({path}, o))
    EXPECT_LE(std::stoul(e.id.substr(e.id.find(':') + 1)) + e.answer.size(), split);

  o.held_out = true;
  o.count = 100000;
  try {
    make_next_words_task({path}, o);
    ADD_FAILURE() << "no error for too many examples";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than the 100000 asked for"), std::string::npos)
        << e.what();
  }
  // Word completion: the prompt ends two letters into the word, the answer is the rest.
  o.count = 40;
  o.answer_words = 1;
  o.prefix_letters = 2;
  o.min_answer_bytes = 2;
  for (const auto& e : make_next_words_task({path}, o)) {
    const size_t at = std::stoul(e.id.substr(e.id.find(':') + 1));
    EXPECT_EQ(text.substr(at - e.prompt.size(), e.prompt.size() + e.answer.size()),
              e.prompt + e.answer);
    ASSERT_GE(e.prompt.size(), 3u);
    EXPECT_EQ(e.prompt[e.prompt.size() - 3], ' ') << e.prompt;  // "... Mo" + "ses"
    EXPECT_TRUE(std::isalpha(static_cast<unsigned char>(e.prompt.back())));
    EXPECT_GE(e.answer.size(), 2u);
    EXPECT_FALSE(std::isalpha(static_cast<unsigned char>(text[at + e.answer.size()])));
  }
  const std::string out = (dir / "task.jsonl").string();
  write_next_words_task(out, held);
  const auto loaded = load_task_file(out);
  ASSERT_EQ(loaded.size(), held.size());
  EXPECT_EQ(loaded[3].prompt, held[3].prompt);
  EXPECT_EQ(loaded[3].answer, held[3].answer);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distill
