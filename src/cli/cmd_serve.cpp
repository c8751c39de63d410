// `distill serve`: an OpenAI-compatible server for a model directory (src/serve/server.h).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "cli/verbs.h"
#include "core/error.h"
#include "infer/kv_type.h"
#include "serve/api_keys.h"
#include "serve/server.h"

namespace distill::cli {
namespace {

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

VerbRun add_serve(CLI::App& app) {
  auto o = std::make_shared<serve::ServeOptions>();
  auto faults = std::make_shared<std::string>();
  auto hash_key = std::make_shared<bool>(false);
  app.add_option("--model", o->model_dir, "model directory to serve");
  add_weights_option(app, o->weights);
  app.add_option("--model-name", o->model_name,
                 "the model name clients ask for (default: the directory's name)");
  app.add_option("--host", o->host, "address to bind (loopback unless told otherwise)");
  app.add_option("--port", o->port, "port (0: any free port, printed at start)");
  app.add_option("--max-batch", o->max_batch, "sequences decoded together");
  app.add_option("--context", o->context,
                 "tokens per sequence, prompt + completion (0: the model's window, at most 4096)");
  app.add_option("--max-body-bytes", o->max_body_bytes, "larger request bodies get 413");
  app.add_option("--max-tokens-limit", o->limits.max_tokens,
                 "largest max_tokens a request may ask");
  app.add_option("--max-n", o->limits.max_n, "largest n (choices per prompt)");
  app.add_option("--max-prompts", o->limits.max_prompts, "prompts per /v1/completions request");
  app.add_option("--max-queue", o->max_queue, "waiting requests beyond this get 429");
  app.add_option("--http-threads", o->http_threads, "connections served at once");
  app.add_option("--api-keys", o->api_keys,
                 "API key file: '<id> <sha256 of key> [rpm=N] [tpm=N]' lines (none: no auth)");
  app.add_option("--rpm", o->rpm, "default requests per minute per key (0: unlimited)");
  app.add_option("--tpm", o->tpm, "default tokens per minute per key (0: unlimited)");
  app.add_option("--usage-db", o->usage_db, "SQLite usage store (none: not recorded)");
  app.add_option("--watermark", o->watermark,
                 "watermark key file (distill detect keygen): watermark every completion");
  auto kv_type = std::make_shared<std::string>("f32");
  app.add_option("--kv-cache", *kv_type,
                 "KV cache storage: f32, bf16 or f16 (half the memory, values rounded)")
      ->capture_default_str();
  app.add_option("--kv-block-size", o->kv.block_size, "KV cache positions per block")
      ->capture_default_str();
  app.add_option("--kv-blocks", o->kv.blocks,
                 "KV cache pool in blocks: bounds the live tokens of all sequences together; "
                 "admission waits when it is full (0: max-batch x context, nobody waits)")
      ->capture_default_str();
  app.add_option("--prefill-chunk", o->prefill_chunk,
                 "prompt tokens a sequence prefills per decode step (0: the whole prompt at once)")
      ->capture_default_str();
  app.add_option("--inject-faults", *faults,
                 "testing: '429=P,500=P,malformed=P,truncated=P,slow=P,slow_ms=MS,seed=S'");
  app.add_flag("--hash-key", *hash_key,
               "print the SHA-256 of an API key read from stdin (for the key file) and exit");
  return [o, faults, hash_key, kv_type]() {
    if (*hash_key) {
      std::string key;
      std::getline(std::cin, key);
      if (key.empty()) throw Error("--hash-key: no key on stdin");
      std::printf("%s\n", serve::sha256_hex(key).c_str());
      return 0;
    }
    if (o->model_dir.empty()) throw Error("serve: --model DIR is required");
    if (!faults->empty()) o->faults = serve::parse_fault_spec(*faults);
    o->kv.type = parse_kv_type(*kv_type);
    // SIGINT / SIGTERM stop the server from a thread of ours (blocked everywhere else, so the
    // server's threads inherit the mask); a client closing early must not kill us.
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    auto log_mu = std::make_shared<std::mutex>();
    auto log = [log_mu](const std::string& line) {
      std::lock_guard<std::mutex> lock(*log_mu);
      std::fprintf(stderr, "%s serve: %s\n", utc_now().c_str(), line.c_str());
    };
    serve::Server server(*o, log);
    const int port = server.bind();
    std::printf("distill serve: listening on http://%s:%d (model %s)\n", o->host.c_str(), port,
                server.model_name().c_str());
    std::fflush(stdout);
    std::atomic<bool> signalled{false};
    std::thread waiter([&server, &signalled, stop_signals, log] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      signalled = true;
      log("stopping");
      server.stop();
    });
    server.listen();
    // Stopped by a signal: the waiter is done. Stopped otherwise: wake it.
    if (!signalled) pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
    return 0;
  };
}

}  // namespace distill::cli
