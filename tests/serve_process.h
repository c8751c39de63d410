// Test helpers shared by serve_test and harvest_test: a small byte-level model directory, and
// `distill serve` run as a child process on a loopback port (read from its first stdout line).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "formats/model_dir.h"
#include "model/model.h"
#include "model/presets.h"
#include "tokenizer/byte_tokenizer.h"

namespace distill::testing_serve {
namespace fs = std::filesystem;

// A 2-layer, 32-wide byte-level GPT-2 with 160 positions (fast to decode in a test).
inline ModelConfig tiny_model_config() {
  ModelConfig c = model_preset("gpt2-tiny");
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 128;
  c.max_position = 160;
  return c;
}

inline std::string save_tiny_model(const fs::path& dir, uint64_t seed = 7) {
  Model m(tiny_model_config());
  m.init_weights(seed);
  // Larger weights than the init make the distributions peaked (texts differ across seeds but
  // greedy text is stable).
  for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 4.0f;
  SaveModelOptions o;
  o.metadata = {{"distill_tokenizer", ByteTokenizer::kFingerprint}};
  save_model_dir(m, dir.string(), o);
  return dir.string();
}

// `distill serve ARGS --port PORT` (PORT 0: any); stderr goes to `log`.
class ServeProcess {
 public:
  ServeProcess(std::vector<std::string> args, const std::string& log, int port = 0) {
    args.insert(args.begin(), {DISTILL_BINARY, "serve"});
    args.push_back("--port");
    args.push_back(std::to_string(port));
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(err, 2);
      close(out[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      setenv("OMP_NUM_THREADS", "1", 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // The first line: "distill serve: listening on http://127.0.0.1:PORT (model NAME)".
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    const size_t colon = line.rfind(':');
    if (line.find("listening") == std::string::npos || colon == std::string::npos) {
      stop(SIGKILL);
      throw std::runtime_error("distill serve did not start; see " + log + " (stdout: '" + line +
                               "')");
    }
    port_ = std::stoi(line.substr(colon + 1));
  }
  ~ServeProcess() { stop(SIGKILL); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits; returns the exit status (as waitpid gives it), -1 if not running.
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace distill::testing_serve
