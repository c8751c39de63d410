// `distill serve`: an OpenAI-compatible HTTP server (cpp-httplib) in front of the engine.
//
//   GET  /health                 {"status": "ok"}
//   GET  /metrics                Prometheus text
//   GET  /v1/models              the served model
//   POST /v1/completions         prompt (text or token ids), max_tokens, temperature, top_p, n,
//                                stop, seed, logprobs (<= 20), echo, stream
//   POST /v1/chat/completions    messages through the model's chat template, logprobs +
//                                top_logprobs, stream (server-sent events ending "data: [DONE]")
//
// Errors are OpenAI's error JSON with 400 (bad JSON or parameters), 401 (missing or wrong key),
// 404 (unknown model or route), 413 (body or prompt too large), 429 (rate limit or full queue,
// with Retry-After) and 500. Every request is logged (one line, the key's id, never the key)
// and recorded in the usage store when there is one.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "infer/kv_cache.h"
#include "kernels/qmatmul.h"
#include "serve/api_keys.h"
#include "serve/api_request.h"
#include "serve/fault_injection.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace distill {
class Model;
class Tokenizer;
class ChatTemplate;
}  // namespace distill

namespace distill::serve {

class Engine;
class ServerMetrics;
class UsageStore;
struct UsageRecord;

struct ServeOptions {
  std::string model_dir;            // the model directory (weights, config, tokenizer)
  WeightType weights = WeightType::F32;  // its linear layers' type (kernels/qmatmul.h)
  std::string model_name;           // the name clients ask for; "" = the directory's name
  std::string host = "127.0.0.1";   // loopback unless told otherwise
  int port = 8000;                  // 0: any free port (printed)
  int max_batch = 16;               // sequences decoded together
  int context = 0;                  // tokens per sequence (prompt + completion); 0: the
                                    // model's window, at most 4096
  size_t max_body_bytes = 1 << 20;  // larger bodies get 413
  RequestLimits limits;             // max_tokens, n, logprobs, prompts per request
  size_t max_queue = 256;           // waiting requests beyond this get 429
  int http_threads = 64;            // connections served at once (each waits for its request)
  std::string api_keys;             // key file (hashes); "" = no authentication
  int rpm = 0, tpm = 0;             // default per-key limits per minute (0: none)
  std::string usage_db;             // SQLite usage store; "" = none
  std::string watermark;            // watermark key file; "" = outputs are not watermarked
  KvCacheOptions kv;                // KV cache: storage type, block size, pool (0: every slot
                                    // can hold the whole context)
  int prefill_chunk = 64;           // prompt rows a sequence runs per decode step (0: all at
                                    // once): bounds how long a long prompt delays the others
  FaultOptions faults;              // testing only (fault_injection.h)
};

class Server {
 public:
  // Loads the model, tokenizer, chat template (when the model has one), keys and usage store.
  // `log` receives one line per request (and start-up notes).
  Server(const ServeOptions& options, std::function<void(const std::string&)> log);
  ~Server();

  // Binds host:port (port 0: a free one) and returns the port.
  int bind();
  // Serves until stop() (from another thread or a signal handler thread).
  void listen();
  void stop();
  const std::string& model_name() const { return model_name_; }

 private:
  struct Call;  // one API request in flight (server.cpp)
  void routes();
  const ApiKey* authenticate(const httplib::Request& req) const;
  void handle_generation(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(const std::shared_ptr<Call>& call, httplib::Response& res);
  void answer_error(Call& call, httplib::Response& res, const std::exception& e);
  void finish(Call& call, int status);

  ServeOptions o_;
  std::function<void(const std::string&)> log_;
  std::string model_name_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<ChatTemplate> chat_;
  std::mutex chat_mu_;
  std::unique_ptr<Engine> engine_;
  KeyStore keys_;
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<UsageStore> usage_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<FaultInjector> faults_;
  std::unique_ptr<httplib::Server> http_;
  std::atomic<uint64_t> next_id_{1};
  uint64_t seed_base_ = 0;
};

}  // namespace distill::serve
