// Teacher data end to end: `score` and `generate` write datasets whose rows are the teacher's
// top-k log-probabilities, resume after SIGKILL with every record exactly once and the same
// text, reject bad prompt files with the file and line, and feed offline distillation.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "distill/teacher_data.h"
#include "formats/model_dir.h"
#include "infer/generator.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"
#include "train/distill_train.h"
#include "test_support.h"
#include "tiny_teacher.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) { return test_support::temp_dir("td-" + name); }

// A small byte-level teacher saved as a model directory.
std::string make_teacher(const fs::path& dir) { return test_support::save_tiny_teacher(dir); }

std::string write_text(const fs::path& dir) {
  std::string text;
  Rng rng(5);
  const char* words[] = {"and ", "the ", "lord ", "said ", "unto ", "moses ", "go ", "forth "};
  while (text.size() < 6000) text += words[rng.below(8)];
  std::ofstream(dir / "text.txt") << text;
  return (dir / "text.txt").string();
}

std::string write_prompts(const fs::path& dir, int n) {
  std::ofstream out(dir / "prompts.jsonl");
  for (int i = 0; i < n; i++) out << "{\"id\": \"p" << i << "\", \"prompt\": \"the lord said " << i << "\"}\n";
  return (dir / "prompts.jsonl").string();
}

TEST(TeacherData, ScoreWritesTheTeachersTopK) {
  const fs::path dir = temp_dir("score");
  ScoreOptions o;
  o.teacher = make_teacher(dir);
  o.text = {write_text(dir)};
  o.out = (dir / "ds").string();
  o.seq_len = 64;
  o.top_k = 8;
  o.encoding = "exact";
  score_text(o, [](const TeacherDataProgress&) {});
  const DatasetReader r = DatasetReader::open(o.out);
  const size_t train = 6000 - size_t(6000 * o.val_fraction);
  EXPECT_EQ(r.size(), int64_t((train + 63) / 64));
  EXPECT_EQ(r.header().tokenizer_fingerprint, ByteTokenizer::kFingerprint);
  // Record 3 equals the generator's teacher-forced scoring of the same window.
  const DatasetEntry e = r.read(3);
  auto model = load_model_dir(o.teacher);
  Generator gen(*model, 1, 64);
  const auto want = gen.score(e.tokens, 8);
  ASSERT_EQ(e.first_target, 1);
  ASSERT_EQ(e.rows.rows(), int(want.size()));
  for (int j = 0; j < e.rows.rows(); j++)
    for (int c = 0; c < 8; c++) {
      EXPECT_EQ(e.rows.ids[j * 8 + c], want[j].top_ids[c]);
      EXPECT_FLOAT_EQ(e.rows.logprobs[j * 8 + c], want[j].top_logprobs[c]);
    }
  // Scoring again without --resume refuses; with it, nothing is added.
  EXPECT_THROW(score_text(o, [](const TeacherDataProgress&) {}), Error);
  o.resume = true;
  score_text(o, [](const TeacherDataProgress&) {});
  EXPECT_EQ(DatasetReader::open(o.out).size(), r.size());
  // --max-records keeps windows spread evenly over the text, not its first ones.
  o.out = (dir / "ds-few").string();
  o.resume = false;
  o.max_records = 4;
  score_text(o, [](const TeacherDataProgress&) {});
  const DatasetReader few = DatasetReader::open(o.out);
  ASSERT_EQ(few.size(), 4);
  for (int64_t i = 0; i < 4; i++)
    EXPECT_EQ(few.record_json(i)["id"], "text.txt#" + std::to_string(i * r.size() / 4));
}

GenerateDataOptions generate_options(const fs::path& dir, const std::string& teacher,
                                     const std::string& out, int prompts) {
  GenerateDataOptions o;
  o.teacher = teacher;
  o.prompts = write_prompts(dir, prompts);
  o.out = out;
  o.num_samples = 2;
  o.max_tokens = 12;
  o.temperature = 0.9f;
  o.top_k = 5;
  o.batch = 4;
  o.seed = 3;
  return o;
}

// A teacher whose vocabulary is padded past its tokenizer's (Qwen2.5: 151936 ids for 151665
// tokens): the padding ids have no text, so they are neither sampled nor stored among the top-k
// alternatives, and the log-probabilities are over the tokenizer's ids (the padding's mass is not
// in them). Before, scoring stopped at the first window whose top k held a padding id (the
// dataset's rows accept only the tokenizer's ids), and the log-probabilities were normalised
// over the padding too.
TEST(TeacherData, PaddedVocabularyIdsAreNeverStored) {
  const fs::path dir = temp_dir("padded");
  const int tokens = ByteTokenizer::kVocabSize, padded = tokens + 64;
  const std::string teacher = test_support::save_tiny_teacher(dir, 21, padded);
  auto model = load_model_dir(teacher);
  ASSERT_EQ(model->config().vocab_size, padded);
  const std::vector<int32_t> ids = ByteTokenizer::encode("the lord said unto");
  // The premise: unrestricted, the padding ids are among this teacher's top 20.
  {
    Generator gen(*model, 1, 64);
    bool padding_ranks = false;
    for (const TokenLogprobs& lp : gen.score(ids, 20))
      for (int32_t id : lp.top_ids) padding_ranks |= id >= tokens;
    ASSERT_TRUE(padding_ranks);
  }
  ScoreOptions so;
  so.teacher = teacher;
  so.text = {write_text(dir)};
  so.out = (dir / "scored").string();
  so.seq_len = 64;
  so.top_k = 20;
  so.max_records = 3;
  so.encoding = "exact";
  score_text(so, [](const TeacherDataProgress&) {});
  GenerateDataOptions go = generate_options(dir, teacher, (dir / "generated").string(), 3);
  go.top_k = 20;
  go.temperature = 1.5f;
  generate_data(go, [](const TeacherDataProgress&) {});
  for (const std::string& out : {so.out, go.out}) {
    SCOPED_TRACE(out);
    const DatasetReader r = DatasetReader::open(out);
    ASSERT_GT(r.size(), 0);
    for (int64_t i = 0; i < r.size(); i++) {
      const DatasetEntry e = r.read(i);
      for (int32_t id : e.tokens) EXPECT_LT(id, tokens);
      ASSERT_GT(e.rows.rows(), 0);
      for (int j = 0; j < e.rows.rows(); j++) {
        double mass = 0.0;
        for (int c = 0; c < e.rows.count(j); c++) {
          EXPECT_LT(e.rows.ids[size_t(j) * 20 + c], tokens);
          mass += std::exp(double(e.rows.logprobs[size_t(j) * 20 + c]));
        }
        EXPECT_LE(mass, 1.0 + 1e-4);
      }
    }
  }
  // The generator's scoring over the tokenizer's ids only: the log-softmax of the first `tokens`
  // logits, so every log-probability rises by the padding's share.
  Generator gen(*model, 1, 64);
  const auto full = gen.score(ids, 0), limited = gen.score(ids, 5, tokens);
  ASSERT_EQ(full.size(), limited.size());
  for (size_t t = 0; t < full.size(); t++) {
    EXPECT_GT(limited[t].logprob, full[t].logprob);
    for (int32_t id : limited[t].top_ids) EXPECT_LT(id, tokens);
  }
}

std::map<std::pair<std::string, int64_t>, std::string> completions(const std::string& dir) {
  const DatasetReader r = DatasetReader::open(dir);
  std::map<std::pair<std::string, int64_t>, std::string> out;
  for (int64_t i = 0; i < r.size(); i++) {
    const auto j = r.record_json(i);
    const auto key = std::make_pair(j["id"].get<std::string>(), j["sample"].get<int64_t>());
    EXPECT_FALSE(out.count(key)) << "duplicate " << key.first << "/" << key.second;
    out[key] = j["completion"];
    const DatasetEntry e = r.read(i);
    EXPECT_EQ(e.first_target, e.prompt_tokens);
    EXPECT_EQ(e.rows.rows(), int(e.tokens.size()) - e.prompt_tokens);
  }
  return out;
}

TEST(TeacherData, GenerateResumesAfterSigkillWithTheSameText) {
  const fs::path dir = temp_dir("gen");
  const std::string teacher = make_teacher(dir);
  const int prompts = 16;
  const GenerateDataOptions straight = generate_options(dir, teacher, (dir / "a").string(), prompts);
  generate_data(straight, [](const TeacherDataProgress&) {});
  const auto want = completions(straight.out);
  ASSERT_EQ(want.size(), size_t(2 * prompts));

  GenerateDataOptions killed = generate_options(dir, teacher, (dir / "b").string(), prompts);
  killed.resume = true;
  for (int round = 0; round < 3; round++) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      try {
        generate_data(killed, [](const TeacherDataProgress&) {});
      } catch (...) {
        _exit(3);
      }
      _exit(0);
    }
    // Kill once some records are durable (more each round).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(dir / "b" / "records.jsonl");
      const auto lines = std::count(std::istreambuf_iterator<char>(in), {}, '\n');
      if (lines >= 6 * (round + 1)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
  }
  generate_data(killed, [](const TeacherDataProgress&) {});
  EXPECT_EQ(completions(killed.out), want);
}

TEST(TeacherData, BadPromptLinesNameFileAndLine) {
  const fs::path dir = temp_dir("bad");
  const std::string teacher = make_teacher(dir);
  GenerateDataOptions o = generate_options(dir, teacher, (dir / "ds").string(), 2);
  std::ofstream(o.prompts, std::ios::app) << "{\"prompt\": \"ok\"}\nnot json\n";
  try {
    generate_data(o, [](const TeacherDataProgress&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompts.jsonl line 4: not valid JSON"), std::string::npos)
        << e.what();
  }
  std::ofstream(o.prompts) << "{\"text\": \"no prompt\"}\n";
  try {
    generate_data(o, [](const TeacherDataProgress&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 1: expected \"prompt\" or \"messages\""),
              std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "ds" / "records.jsonl") &&
               fs::file_size(dir / "ds" / "records.jsonl") > 0);
}

// The teacher's scores of write_text's text (windows of 64) as a dataset in dir/ds.
ScoreOptions scored_dataset(const fs::path& dir) {
  ScoreOptions s;
  s.teacher = make_teacher(dir);
  s.text = {write_text(dir)};
  s.out = (dir / "ds").string();
  s.seq_len = 64;
  score_text(s, [](const TeacherDataProgress&) {});
  return s;
}

// Losses (and held-out losses) of a run, with their steps: everything but the timings.
std::vector<std::string> run_losses(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* key : {"loss", "loss_kl", "loss_ce", "val_loss"})
      if (j.contains(key)) out.push_back(std::string(key) + " " + j[key].dump() + "@" + j["step"].dump());
  }
  return out;
}

// `distill train` (offline) killed with SIGKILL at arbitrary moments and restarted with --resume
// until it finishes writes the same losses, bit for bit, as an uninterrupted run.
TEST(TeacherData, TrainKilledWithSigkillResumesBitIdentically) {
  const fs::path dir = temp_dir("train-kill");
  const ScoreOptions s = scored_dataset(dir);
  const std::string args =
      fmt::format("train --dataset {} --student-preset gpt2-tiny --loss kl=0.5,ce=0.5 "
                  "--steps 30 --seq-len 64 --batch-size 4 --eval-every 10 --eval-batches 2 "
                  "--save-every 3 --seed 9 --threads 2",
                  s.out);
  const fs::path straight = dir / "straight", killed = dir / "killed";
  ASSERT_EQ(std::system(fmt::format("{} {} --out {} > /dev/null 2>&1", DISTILL_BINARY, args,
                                    straight.string()).c_str()), 0);
  int kills = 0, status = -1;
  for (int attempt = 0; attempt < 40 && status != 0; attempt++) {
    // Kill after 0.3 s, 0.5 s, ...: early kills hit loading or the first steps, later ones
    // checkpoints and evaluations. A run that finishes inside its budget exits 0.
    const std::string cmd = fmt::format(
        "timeout -s KILL {:.2f} {} {} --out {} --resume > /dev/null 2>&1", 0.3 + 0.15 * attempt,
        DISTILL_BINARY, args, killed.string());
    status = std::system(cmd.c_str());
    if (status != 0) kills++;
  }
  ASSERT_EQ(status, 0) << "the killed run never finished";
  EXPECT_GE(kills, 1) << "the run finished before the first kill: nothing was tested";
  const auto want = run_losses(straight);
  EXPECT_EQ(want.size(), 30u * 3 + 3u);  // loss, loss_kl, loss_ce per step; 3 evaluations
  EXPECT_EQ(run_losses(killed), want);
  // The resumed run's student still says which tokenizer it uses (it once lost the metadata).
  EXPECT_EQ(model_tokenizer_fingerprint((killed / "model").string()), ByteTokenizer::kFingerprint);
}

TEST(TeacherData, OfflineDistillationLowersTheLossAndChecksTheTokenizer) {
  const fs::path dir = temp_dir("offline");
  const ScoreOptions s = scored_dataset(dir);

  DistillTrainOptions o;
  o.dataset = s.out;
  o.student_preset = "llama-tiny";
  o.loss = "kl=0.7,ce=0.3";
  o.val_fraction = 0.2;
  o.loop.out = (dir / "student").string();
  o.loop.seq_len = 64;
  o.loop.batch_size = 4;
  o.loop.steps = 30;
  o.loop.warmup = 3;
  o.loop.lr = 3e-3f;
  o.loop.eval_every = 10;
  o.loop.eval_batches = 2;
  o.loop.save_every = 0;
  std::vector<float> val;
  distill_train(o, [&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::Step && p.val_loss) val.push_back(*p.val_loss);
  });
  ASSERT_EQ(val.size(), 3u);
  EXPECT_LT(val.back(), val.front());
  EXPECT_EQ(model_tokenizer_fingerprint((dir / "student" / "model").string()),
            ByteTokenizer::kFingerprint);

  // A student whose vocabulary differs from the dataset's tokenizer is refused.
  nlohmann::json cfg = model_preset("llama-tiny").to_json();
  cfg["vocab_size"] = 300;
  std::ofstream(dir / "big.json") << cfg.dump();
  o.student_preset.clear();
  o.student_config = (dir / "big.json").string();
  o.loop.out = (dir / "student2").string();
  try {
    distill_train(o, [](const TrainProgress&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("student vocabulary (300 tokens) differs from the "
                                         "dataset"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace distill
