// On-policy distillation (GKD / MiniLLM: `distill train --on-policy-fraction`) and hidden-state
// distillation end to end: the completions a step trains on are the student's own samples (the
// test regenerates them from the weights the step started from), a run killed with SIGKILL and
// resumed logs the same samples and losses as an uninterrupted one, the fraction mixes policies,
// a hidden-state run with a learned projection resumes bit-identically, and bad settings are
// clear errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fmt/format.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/file.h"
#include "formats/model_dir.h"
#include "infer/generator.h"
#include "model/presets.h"
#include "serve_process.h"
#include "test_support.h"
#include "tiny_teacher.h"
#include "tokenizer/byte_tokenizer.h"
#include "train/checkpoint.h"

namespace distill {
namespace {
namespace fs = std::filesystem;
using test_support::run_cli;
using test_support::temp_dir;

std::string write_text(const fs::path& dir) {
  std::string text;
  const char* words[] = {"the", "lord", "said", "unto", "moses", "and", "it", "came", "to",
                         "pass", "that", "in", "those", "days", "there", "was", "a", "king"};
  uint64_t x = 12345;
  for (int i = 0; i < 6000; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(x >> 33) % 18];
    text += (x >> 20) % 11 == 0 ? ".\n" : " ";
  }
  const std::string path = (dir / "text.txt").string();
  std::ofstream(path) << text;
  return path;
}

std::string save_student(const fs::path& dir) {
  Model m(model_preset("gpt2-tiny"));
  m.init_weights(7);
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, (dir / "init").string(), o);
  return (dir / "init").string();
}

// The step lines of a run's metrics.jsonl.
std::vector<nlohmann::json> steps_of(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j);
  }
  return out;
}

// What the student at `model_dir` samples from `prompt` with `seed` (as a step would).
std::vector<int32_t> regenerate(const std::string& model_dir, const nlohmann::json& sample,
                                int max_tokens) {
  auto model = load_model_dir(model_dir);
  Generator gen(*model, 1, 25);
  GenerateOptions g;
  g.sampling.temperature = 1.0f;
  g.sampling.top_p = 1.0f;
  g.max_tokens = max_tokens;
  g.request_seeds = {sample.at("seed").get<uint64_t>()};
  return gen.generate({sample.at("prompt").get<std::vector<int32_t>>()}, g)[0].tokens;
}

class OnPolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir("on-policy");
    teacher_ = test_support::save_tiny_teacher(dir_);
    text_ = write_text(dir_);
    init_ = save_student(dir_);
  }
  std::string common(const std::string& out, const std::string& fraction = "1",
                     const std::string& prompt_tokens = "8") const {
    return "train --teacher " + teacher_ + " --data " + text_ + " --init-from " + init_ +
           " --on-policy-fraction " + fraction + " --prompt-tokens " + prompt_tokens +
           " --loss jsd:0.5 --steps 6 --batch-size 1 --seq-len 24"
           " --save-every 2 --keep-checkpoints 0 --eval-every 3"
           " --eval-batches 1 --warmup 1 --lr 3e-3 --seed 3 --threads 2 --out " + out;
  }
  fs::path dir_;
  std::string teacher_, text_, init_;
};

TEST_F(OnPolicy, CompletionsAreTheStudentsOwnSamplesAndSigkillResumeIsBitIdentical) {
  const fs::path straight = dir_ / "straight";
  auto r = run_cli(common(straight.string()), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> steps = steps_of(straight);
  ASSERT_EQ(steps.size(), 6u);
  for (const nlohmann::json& s : steps) {
    EXPECT_EQ(s.at("on_policy_batches"), 1);
    ASSERT_TRUE(s.contains("sample")) << s.dump();
    EXPECT_EQ(s["sample"]["prompt"].size(), 8u);
    EXPECT_EQ(s["sample"]["completion"].size(), 17u);  // seq-len + 1 - prompt
  }
  // Step 1 sampled from the initial weights; step 3 from the checkpoint after step 2, step 5
  // from the one after step 4: regenerating from those weights gives the logged completions.
  EXPECT_EQ(regenerate(init_, steps[0]["sample"], 17),
            steps[0]["sample"]["completion"].get<std::vector<int32_t>>());
  for (int s : {2, 4}) {
    const std::string ckpt = (straight / "checkpoints" / fmt::format("step-{:08d}", s)).string();
    EXPECT_EQ(regenerate(ckpt, steps[s]["sample"], 17),
              steps[s]["sample"]["completion"].get<std::vector<int32_t>>())
        << "step " << s + 1;
  }
  // ...and not what the initial student would have sampled by then (training moved it).
  EXPECT_NE(regenerate(init_, steps[4]["sample"], 17),
            steps[4]["sample"]["completion"].get<std::vector<int32_t>>());

  // SIGKILL after the first checkpoint, then resume: the same samples and losses, bit for bit.
  const fs::path killed = dir_ / "killed";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c",
          ("exec " + std::string(DISTILL_BINARY) + " " + common(killed.string()) +
           " --resume >/dev/null 2>&1").c_str(), (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && !latest_checkpoint(killed.string()))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  r = run_cli(common(killed.string()) + " --resume", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> resumed = steps_of(killed);
  ASSERT_EQ(resumed.size(), steps.size());
  for (size_t i = 0; i < steps.size(); i++) {
    EXPECT_EQ(resumed[i]["loss"], steps[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(resumed[i]["sample"], steps[i]["sample"]) << "step " << i + 1;
  }
}

TEST_F(OnPolicy, FractionMixesOnPolicyAndCorpusBatches) {
  const fs::path run = dir_ / "mixed";
  auto r = run_cli(common(run.string(), "0.5") + " --grad-accum 4", dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  int on = 0;
  for (const nlohmann::json& s : steps_of(run)) on += s.at("on_policy_batches").get<int>();
  EXPECT_GT(on, 0);
  EXPECT_LT(on, 24);  // 6 steps x 4 micro-batches; all 24 on-policy has probability 2^-24
}

// A teacher behind `distill serve` (echo + logprobs): the student samples the same completions as
// with the teacher in process (same seeds, same starting weights), and the sparse top-20 loss of
// step 1 is at most the dense one (a divergence over a coarser partition of the vocabulary
// cannot be larger) and positive.
TEST_F(OnPolicy, EndpointTeacherScoresTheStudentsSamples) {
  testing_serve::ServeProcess server({"--model", teacher_, "--model-name", "teacher"},
                                     (dir_ / "serve.log").string());
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1";
  auto args = [&](const std::string& teacher, const fs::path& out) {
    return "train " + teacher + " --data " + text_ + " --init-from " + init_ +
           " --on-policy-fraction 1 --loss kl --steps 3 --batch-size 2 --seq-len 24"
           " --prompt-tokens 8 --eval-every 3 --eval-batches 1 --warmup 1 --lr 3e-3 --seed 3"
           " --threads 2 --out " + out.string();
  };
  auto r = run_cli(args("--teacher-endpoint " + endpoint + " --teacher-top-logprobs 20",
                        dir_ / "api"), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run_cli(args("--teacher " + teacher_, dir_ / "local"), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> api = steps_of(dir_ / "api"), local = steps_of(dir_ / "local");
  ASSERT_EQ(api.size(), 3u);
  ASSERT_EQ(local.size(), 3u);
  EXPECT_EQ(api[0]["sample"], local[0]["sample"]);
  const double a = api[0]["loss"].get<double>(), l = local[0]["loss"].get<double>();
  EXPECT_GT(a, 0.0);
  EXPECT_LE(a, l * (1.0 + 1e-4));
  // The endpoint teacher cannot give hidden states.
  r = run_cli(args("--teacher-endpoint " + endpoint, dir_ / "hidden") + " --hidden-loss mse", dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("need the teacher's weights (--teacher)"), std::string::npos) << r.err;
}

TEST_F(OnPolicy, BadSettingsAreClearErrors) {
  auto r = run_cli(common((dir_ / "a").string(), "1.5"), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("expected a probability in [0, 1]"), std::string::npos) << r.err;
  r = run_cli(common((dir_ / "b").string(), "1", "24"), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("leaves nothing to complete"), std::string::npos) << r.err;
  r = run_cli("train --dataset " + dir_.string() + " --student-preset gpt2-tiny "
              "--on-policy-fraction 0.5 --out " + (dir_ / "c").string(), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("needs the teacher in process"), std::string::npos) << r.err;
  r = run_cli(common((dir_ / "d").string()) + " --hidden-loss l2", dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("expected mse or cosine"), std::string::npos) << r.err;
}

// A narrower student (d 104) than the teacher (d 128): the learned projections train, are saved
// with each checkpoint, and a run stopped and resumed gives the same losses as one that was not.
TEST(HiddenStates, LearnedProjectionTrainsAndResumesBitIdentically) {
  const fs::path dir = temp_dir("hidden-states");
  const std::string teacher = test_support::save_tiny_teacher(dir);
  const std::string text = write_text(dir);
  auto common = [&](const fs::path& out) {
    return "train --teacher " + teacher + " --data " + text + " --student-preset demo-student"
           " --loss kl --hidden-loss cosine --hidden-weight 1 --layer-map 0:0,2:2,4:4"
           " --steps 30 --batch-size 2 --seq-len 32 --save-every 10 --eval-every 10"
           " --eval-batches 1 --warmup 2 --lr 3e-3 --seed 5 --threads 2 --out " + out.string();
  };
  auto r = run_cli(common(dir / "straight"), dir);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> straight = steps_of(dir / "straight");
  ASSERT_EQ(straight.size(), 30u);
  // The cosine term falls as the projections and the student learn.
  EXPECT_LT(straight.back()["loss_hidden"].get<double>(),
            0.8 * straight.front()["loss_hidden"].get<double>());
  EXPECT_TRUE(fs::exists(dir / "straight" / "checkpoints" / "step-00000030" /
                         "task_state.safetensors"));
  r = run_cli(common(dir / "stopped") + " --stop-after 13", dir);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run_cli(common(dir / "stopped") + " --resume", dir);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> resumed = steps_of(dir / "stopped");
  ASSERT_EQ(resumed.size(), straight.size());
  for (size_t i = 0; i < straight.size(); i++) {
    EXPECT_EQ(resumed[i]["loss"], straight[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(resumed[i]["loss_hidden"], straight[i]["loss_hidden"]) << "step " << i + 1;
  }
  // Attention maps (teacher 4 heads, student 4): the KL between head-averaged maps falls too.
  r = run_cli("train --teacher " + teacher + " --data " + text + " --student-preset demo-student"
              " --loss kl --attention-loss kl --attention-layers 1:1,3:3 --steps 30"
              " --batch-size 2 --seq-len 32 --eval-every 30 --eval-batches 1 --warmup 2"
              " --lr 3e-3 --seed 5 --threads 2 --out " + (dir / "attention").string(), dir);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> att = steps_of(dir / "attention");
  ASSERT_EQ(att.size(), 30u);
  EXPECT_LT(att.back()["loss_attention"].get<double>(),
            0.8 * att.front()["loss_attention"].get<double>());
}

}  // namespace
}  // namespace distill
