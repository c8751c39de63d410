// Pretraining end to end: held-out loss goes down, resume (after a clean stop and after SIGKILL)
// reproduces the uninterrupted run's losses bit for bit, and bad input is one clear error line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "data/text_corpus.h"
#include "eval/evaluate.h"
#include "formats/model_dir.h"
#include "train/checkpoint.h"
#include "train/pretrain.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"
#include "train/distill_train.h"
#include "test_support.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) { return test_support::temp_dir(name); }

// A corpus with structure a small model can learn: sentences from a little grammar.
std::string write_corpus(const fs::path& dir) {
  const char* subjects[] = {"the king", "a shepherd", "the people", "my son", "the prophet"};
  const char* verbs[] = {"went unto", "spake to", "blessed", "saw", "followed"};
  const char* objects[] = {"the city", "the river", "his brethren", "the mountain", "the field"};
  Rng rng(42);
  std::string text;
  while (text.size() < 60000) {
    text += subjects[rng.below(5)];
    text += ' ';
    text += verbs[rng.below(5)];
    text += ' ';
    text += objects[rng.below(5)];
    text += rng.below(3) == 0 ? ".\n" : ", and ";
  }
  const fs::path path = dir / "corpus.txt";
  std::ofstream(path) << text;
  return path.string();
}

PretrainOptions small_run(const std::string& corpus, const fs::path& out) {
  PretrainOptions o;
  o.data = {corpus};
  o.loop.out = out.string();
  o.preset = "gpt2-tiny";
  o.loop.seq_len = 32;
  o.loop.batch_size = 4;
  o.loop.steps = 24;
  o.loop.warmup = 4;
  o.loop.lr = 3e-3f;
  o.loop.eval_every = 8;
  o.loop.eval_batches = 2;
  o.loop.save_every = 6;
  o.val_fraction = 0.1;
  return o;
}

std::vector<std::string> losses(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].dump() + "@" + j["step"].dump());
    if (j.contains("val_loss")) out.push_back("val " + j["val_loss"].dump() + "@" + j["step"].dump());
  }
  return out;
}

TEST(Pretrain, HeldOutLossGoesDownAndModelDirLoads) {
  const fs::path dir = temp_dir("pretrain-loss");
  PretrainOptions o = small_run(write_corpus(dir), dir / "run");
  o.loop.steps = 48;
  o.loop.eval_every = 12;
  std::vector<float> val;
  pretrain(o, [&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::Step && p.val_loss) val.push_back(*p.val_loss);
  });
  ASSERT_EQ(val.size(), 4u);
  for (size_t i = 1; i < val.size(); i++) EXPECT_LT(val[i], val[i - 1]) << "evaluation " << i;
  EXPECT_LT(val.back(), 0.6f * std::log(256.0f));  // well below the uniform byte model
  auto model = load_model_dir((dir / "run" / "model").string());
  EXPECT_EQ(model->config().model_type, "gpt2");
  // A checkpoint is a model directory a teacher can be loaded from, byte-level tokenizer and
  // all (it lacked the tokenizer metadata once, so `distill score` refused it).
  const std::string ckpt = *latest_checkpoint((dir / "run").string());
  EXPECT_EQ(load_model_tokenizer(ckpt)->fingerprint(),
            load_model_tokenizer((dir / "run" / "model").string())->fingerprint());
}

TEST(Pretrain, ResumeIsBitIdentical) {
  const fs::path dir = temp_dir("pretrain-resume");
  const std::string corpus = write_corpus(dir);
  auto quiet = [](const TrainProgress&) {};
  pretrain(small_run(corpus, dir / "straight"), quiet);

  PretrainOptions first = small_run(corpus, dir / "split");
  first.loop.stop_after = 9;  // stops between checkpoints 6 and 12: steps 7..9 are redone on resume
  first.loop.save_every = 6;
  pretrain(first, quiet);
  EXPECT_EQ(fs::path(*latest_checkpoint((dir / "split").string())).filename(), "step-00000009");
  PretrainOptions second = small_run(corpus, dir / "split");
  second.loop.resume = true;
  pretrain(second, quiet);
  EXPECT_EQ(losses(dir / "straight"), losses(dir / "split"));
  EXPECT_EQ(losses(dir / "straight").size(), 24u + 3u);
}

TEST(Pretrain, RefusesToOverwriteARunWithoutResume) {
  const fs::path dir = temp_dir("pretrain-refuse");
  PretrainOptions o = small_run(write_corpus(dir), dir / "run");
  o.loop.steps = 6;
  pretrain(o, [](const TrainProgress&) {});
  try {
    pretrain(o, [](const TrainProgress&) {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
}

TEST(Pretrain, ASecondProcessOnTheSameRunDirectoryIsRefused) {
  // A concurrent second run used to truncate the first one's metrics.jsonl.
  const fs::path dir = temp_dir("pretrain-lock");
  PretrainOptions o = small_run(write_corpus(dir), dir / "run");
  o.loop.steps = 6;
  pretrain(o, [](const TrainProgress&) {});
  const std::string metrics = read_file_text((dir / "run" / "metrics.jsonl").string());
  ASSERT_FALSE(metrics.empty());
  // Another process holds the run (the lock is per open file description, as across processes).
  const int fd = ::open((dir / "run" / ".lock").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  o.loop.resume = true;
  o.loop.steps = 12;
  try {
    pretrain(o, [](const TrainProgress&) {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run directory is in use by another distill process"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(read_file_text((dir / "run" / "metrics.jsonl").string()), metrics);  // untouched
  ::close(fd);
  pretrain(o, [](const TrainProgress&) {});  // free again: the run continues
}

// Runs the CLI binary; returns its exit status and stderr.
std::pair<int, std::string> run_cli(const std::string& args) {
  const std::string cmd = std::string(DISTILL_BINARY) + " " + args + " 2>&1 >/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

TEST(Pretrain, SigkillAtAnyMomentThenResumeMatchesUninterrupted) {
  const fs::path dir = temp_dir("pretrain-kill");
  const std::string corpus = write_corpus(dir);
  const std::string common = " --preset gpt2-tiny --seq-len 32 --batch-size 4 --steps 40 "
                             "--warmup 4 --lr 3e-3 --eval-every 10 --eval-batches 2 "
                             "--save-every 3 --val-fraction 0.1 --threads 2 ";
  ASSERT_EQ(run_cli("pretrain " + corpus + " --out " + (dir / "straight").string() + common).first, 0);
  // Kill the run three times, each time after it has written a newer checkpoint and then a bit
  // more (so the kill lands mid-step, mid-evaluation or mid-checkpoint), resuming each time.
  const std::string killed = (dir / "killed").string();
  int64_t last_step = 0;
  for (int delay_ms : {0, 70, 160}) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string args = "pretrain " + corpus + " --out " + killed + common + " --resume";
      execl("/bin/sh", "sh", "-c", (std::string("exec ") + DISTILL_BINARY + " " + args +
                                    " >/dev/null 2>&1").c_str(), (char*)nullptr);
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    int64_t step = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      auto latest = latest_checkpoint(killed);
      if (latest) step = std::stoll(fs::path(*latest).filename().string().substr(5));
      if (step > last_step) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
    ASSERT_GT(step, last_step) << "no progress before kill";
    last_step = step;
  }
  auto [code, err] = run_cli("pretrain " + corpus + " --out " + killed + common + " --resume");
  ASSERT_EQ(code, 0) << err;
  EXPECT_EQ(losses(dir / "straight"), losses(killed));
}

// With a BPE tokenizer: the preset takes its vocabulary, the corpus is read in its tokens, every
// saved model directory carries its files and fingerprint, and a student distilled online from
// that model inherits both (model directories without them could not be sampled, evaluated or
// tested by `distill detect`).
TEST(Pretrain, WithABpeTokenizerModelDirectoriesCarryIt) {
  const fs::path dir = temp_dir("pretrain-bpe");
  const std::string corpus = write_corpus(dir);
  auto [code, err] = run_cli("tokenizer train --files " + corpus + " --vocab-size 300 --out " +
                             (dir / "tok").string());
  ASSERT_EQ(code, 0) << err;
  const auto tok = load_tokenizer((dir / "tok").string());
  // The held-out tail is the one `distill eval` holds out (the last 10% of the bytes, encoded on
  // its own): it was the last 10% of the tokens once, so eval scored some training text.
  EvalOptions eval;
  eval.text_files = {corpus};
  eval.val_fraction = 0.1;
  const TextCorpus split = TextCorpus::load({corpus}, 0.1, 33, tok.get());
  EXPECT_EQ(split.val_tokens(), tok->encode(read_held_out_text(eval, false)).size());
  // Cutting the text re-encodes the word it cuts (a few tokens more); nothing is lost.
  const size_t whole = tok->encode(read_file_text(corpus)).size();
  EXPECT_GE(split.train_tokens() + split.val_tokens(), whole);
  EXPECT_LE(split.train_tokens() + split.val_tokens(), whole + 4);
  PretrainOptions o = small_run(corpus, dir / "run");
  o.tokenizer = (dir / "tok").string();
  o.loop.steps = 36;
  o.loop.eval_every = 12;
  std::vector<float> val;
  pretrain(o, [&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::Step && p.val_loss) val.push_back(*p.val_loss);
  });
  ASSERT_EQ(val.size(), 3u);
  EXPECT_LT(val.back(), val.front());
  for (const std::string& d : {(dir / "run" / "model").string(),
                               *latest_checkpoint((dir / "run").string())}) {
    EXPECT_TRUE(fs::exists(fs::path(d) / "tokenizer.json")) << d;
    EXPECT_TRUE(fs::exists(fs::path(d) / "tokenizer_config.json")) << d;
    EXPECT_EQ(load_model_tokenizer(d)->fingerprint(), tok->fingerprint()) << d;
    EXPECT_EQ(model_tokenizer_fingerprint(d), tok->fingerprint()) << d;
  }
  EXPECT_EQ(load_model_dir((dir / "run" / "model").string())->config().vocab_size, 300);

  // Online distillation reads the text in the teacher's tokens; the student inherits them.
  std::tie(code, err) = run_cli("train --teacher " + (dir / "run" / "model").string() +
                                " --data " + corpus + " --student-preset gpt2-tiny --loss kl" +
                                " --steps 4 --seq-len 32 --batch-size 2 --eval-every 2" +
                                " --out " + (dir / "student").string());
  ASSERT_EQ(code, 0) << err;
  const std::string student = (dir / "student" / "model").string();
  EXPECT_EQ(load_model_dir(student)->config().vocab_size, 300);
  EXPECT_EQ(load_model_tokenizer(student)->fingerprint(), tok->fingerprint());
  EXPECT_EQ(model_tokenizer_fingerprint(student), tok->fingerprint());

  // A --tokenizer that is not one: one error line, nothing trained.
  std::tie(code, err) = run_cli("pretrain " + corpus + " --tokenizer " + dir.string() +
                                " --out " + (dir / "bad").string());
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("expected a tokenizer.json, a tokenizer.model or a directory holding one"),
            std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  // A model config whose vocabulary is smaller than the tokenizer's is refused.
  const fs::path cfg = dir / "small.json";
  nlohmann::json small = load_model_dir((dir / "run" / "model").string())->config().to_json();
  small["vocab_size"] = 256;
  std::ofstream(cfg) << small.dump();
  std::tie(code, err) = run_cli("pretrain " + corpus + " --tokenizer " + (dir / "tok").string() +
                                " --model-config " + cfg.string() + " --out " +
                                (dir / "bad2").string());
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("model vocabulary (256) is smaller than the hf-bpe tokenizer's 300"),
            std::string::npos) << err;
}

TEST(PretrainCli, BadInputIsOneClearErrorLine) {
  const fs::path dir = temp_dir("pretrain-bad");
  auto [code, err] = run_cli("pretrain /nonexistent/corpus.txt --out " + (dir / "a").string());
  EXPECT_EQ(code, 1);
  EXPECT_EQ(err, "error: corpus file '/nonexistent/corpus.txt': No such file or directory\n");

  const fs::path cfg = dir / "config.json";
  std::ofstream(cfg) << R"({"model_type": "bert", "vocab_size": 300})";
  std::tie(code, err) = run_cli("pretrain " + write_corpus(dir) + " --model-config " +
                                cfg.string() + " --out " + (dir / "b").string());
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("model_type 'bert' is not supported"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;

  // A truncated model.safetensors: one error line naming the file.
  const fs::path model_dir = dir / "run-c";
  PretrainOptions o = small_run(write_corpus(dir), model_dir);
  o.loop.steps = 2;
  pretrain(o, [](const TrainProgress&) {});
  const fs::path weights = model_dir / "model" / "model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) - 100);
  std::tie(code, err) = run_cli("sample " + (model_dir / "model").string());
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
  EXPECT_EQ(err.rfind("error: ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

}  // namespace
}  // namespace distill
