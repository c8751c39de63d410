// Server set-up, routes, authentication, errors and the per-request record; the generation
// endpoints are in server_generation.cpp.
#include "serve/server.h"

#include <httplib.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "formats/model_dir.h"
#include "model/model.h"
#include "forensics/prompt_sketch.h"
#include "serve/api_error.h"
#include "serve/engine.h"
#include "serve/server_call.h"
#include "serve/server_metrics.h"
#include "serve/usage_store.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/chat_template.h"

namespace distill::serve {

using json = nlohmann::json;
namespace fs = std::filesystem;

Server::Server(const ServeOptions& options, std::function<void(const std::string&)> log)
    : o_(options), log_(std::move(log)) {
  if (o_.max_batch <= 0) throw Error("--max-batch must be positive, got {}", o_.max_batch);
  if (o_.limits.max_tokens <= 0 || o_.limits.max_n <= 0)
    throw Error("--max-tokens-limit and --max-n must be positive");
  if (o_.limits.max_logprobs < 0 || o_.limits.max_logprobs > 20)
    throw Error("--max-logprobs must be in [0, 20]");
  if (o_.http_threads < 2) throw Error("--http-threads must be at least 2");
  model_name_ = o_.model_name.empty()
                    ? fs::path(o_.model_dir).lexically_normal().filename().string()
                    : o_.model_name;
  if (model_name_.empty() || model_name_ == ".")
    model_name_ = fs::absolute(o_.model_dir).lexically_normal().parent_path().filename().string();
  if (!o_.api_keys.empty()) keys_ = KeyStore::load(o_.api_keys);
  model_ = load_model_dir(o_.model_dir);
  model_->set_weight_type(o_.weights);
  tok_ = load_model_tokenizer(o_.model_dir);
  if (tok_->vocab_size() > model_->config().vocab_size)
    throw Error("{}: the tokenizer has {} tokens but the model's vocabulary is {}", o_.model_dir,
                tok_->vocab_size(), model_->config().vocab_size);
  if (tok_->vocab_size() < model_->config().vocab_size && log_)
    log_(fmt::format("note: the model's vocabulary has {} ids past the tokenizer's {}: they have "
                     "no text and are never sampled",
                     model_->config().vocab_size - tok_->vocab_size(), tok_->vocab_size()));
  try {
    chat_ = std::make_unique<ChatTemplate>(ChatTemplate::from_file(o_.model_dir));
  } catch (const Error& e) {
    if (log_)
      log_(
          fmt::format("note: no chat template ({}); chat requests are rendered as "
                      "\"role: content\" lines",
                      e.what()));
  }
  // The KV cache holds max_batch x context positions: the default stays at 4096 so that a
  // model with a long window (32k+) does not reserve gigabytes it will rarely use.
  int context = o_.context > 0 ? o_.context : std::min(model_->config().max_position, 4096);
  if (model_->config().arch == Arch::Gpt2)
    context = std::min(context, model_->config().max_position);
  std::unique_ptr<WatermarkKey> watermark;
  if (!o_.watermark.empty()) {
    watermark = std::make_unique<WatermarkKey>(load_watermark_key(o_.watermark));
    log_(fmt::format("note: outputs are watermarked ({})", watermark->describe()));
  }
  engine_ = std::make_unique<Engine>(*model_, *tok_, o_.max_batch, context, o_.max_queue,
                                     watermark.get(), DecoderOptions{o_.kv, o_.prefill_chunk});
  log_(fmt::format("note: KV cache {} in blocks of {} positions, pool of {} positions; prefill "
                   "chunk {}",
                   kv_type_name(o_.kv.type), o_.kv.block_size, engine_->pool_positions(),
                   o_.prefill_chunk));
  limiter_ = std::make_unique<RateLimiter>(o_.rpm, o_.tpm);
  if (!o_.usage_db.empty()) usage_ = std::make_unique<UsageStore>(o_.usage_db);
  metrics_ = std::make_unique<ServerMetrics>();
  if (o_.faults.any()) faults_ = std::make_unique<FaultInjector>(o_.faults);
  seed_base_ = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
  http_ = std::make_unique<httplib::Server>();
  routes();
}

Server::~Server() {
  if (http_) http_->stop();
  engine_.reset();  // joins the engine thread before the model goes
}

const ApiKey* Server::authenticate(const httplib::Request& req) const {
  if (keys_.empty()) return nullptr;
  const std::string auth = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (auth.empty())
    throw ApiError(401, "invalid_request_error",
                   "You didn't provide an API key: send 'Authorization: Bearer <key>'", "",
                   "missing_api_key");
  const ApiKey* key = auth.rfind(prefix, 0) == 0 ? keys_.find(auth.substr(prefix.size())) : nullptr;
  if (!key)
    throw ApiError(401, "invalid_request_error", "Incorrect API key provided", "",
                   "invalid_api_key");
  return key;
}

void Server::answer_error(Call& call, httplib::Response& res, const std::exception& e) {
  const ApiError* api = dynamic_cast<const ApiError*>(&e);
  const ApiError err = api ? *api : ApiError(500, "server_error", e.what(), "", "internal_error");
  res.status = err.status;
  if (err.status == 429)
    res.set_header("Retry-After",
                   std::to_string(int64_t(std::ceil(std::max(1e-3, err.retry_after_s)))));
  res.set_content(to_json_text(err.body()), "application/json");
  finish(call, err.status);
}

void Server::finish(Call& call, int status) {
  if (call.finished) return;
  call.finished = true;
  const double latency =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - call.t0).count();
  if (call.key && status == 200) limiter_->add_tokens(*call.key, call.tokens_in + call.tokens_out);
  metrics_->record(call.endpoint, status, latency, call.tokens_in, call.tokens_out);
  if (usage_) {
    UsageRecord u;
    u.key_id = call.key ? call.key->id : "";
    u.time = call.unix_time;
    u.endpoint = call.endpoint;
    u.prompt_sha256 = call.prompt_sha256;
    u.prompt_chars = call.prompt_chars;
    u.tokens_in = call.tokens_in;
    u.tokens_out = call.tokens_out;
    u.logprobs = call.logprobs;
    u.latency_ms = latency * 1e3;
    u.status = status;
    std::string joined;  // all prompts of the request, as hashed into prompt_sha256
    for (const std::string& t : call.prompt_texts) joined += t + '\n';
    if (!joined.empty()) u.prompt_sketch = sketch_to_blob(prompt_sketch(joined));
    try {
      usage_->record(u);
    } catch (const std::exception& e) {
      if (log_) log_(fmt::format("usage store: {}", e.what()));
    }
  }
  if (log_)
    log_(fmt::format("request {} {} key={} in={} out={} {:.1f}ms", call.endpoint, status,
                     call.key ? call.key->id : "-", call.tokens_in, call.tokens_out,
                     latency * 1e3));
}

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

void Server::routes() {
  httplib::Server& s = *http_;
  const int threads = o_.http_threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  s.set_payload_max_length(o_.max_body_bytes);
  // Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm holds the
  // body until the client's delayed ACK (~40 ms), which dominated a short request's latency.
  s.set_tcp_nodelay(true);
  s.set_keep_alive_max_count(100000);
  s.set_keep_alive_timeout(30);
  s.set_read_timeout(60, 0);
  s.set_write_timeout(60, 0);

  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}", "application/json");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_->prometheus(engine_->stats()), "text/plain; version=0.0.4");
  });
  auto models = [this](const httplib::Request& req, httplib::Response& res) {
    Call call;
    call.endpoint = "/v1/models";
    call.unix_time = unix_now();
    try {
      call.key = authenticate(req);
      const json model = {{"id", model_name_},
                          {"object", "model"},
                          {"created", int64_t(call.unix_time)},
                          {"owned_by", "distill"}};
      if (req.matches.size() > 1) {
        if (req.matches[1] != model_name_)
          throw ApiError(404, "invalid_request_error",
                         fmt::format("The model '{}' does not exist", req.matches[1].str()),
                         "model", "model_not_found");
        res.set_content(to_json_text(model), "application/json");
      } else {
        res.set_content(to_json_text({{"object", "list"}, {"data", json::array({model})}}),
                        "application/json");
      }
      finish(call, 200);
    } catch (const std::exception& e) {
      answer_error(call, res, e);
    }
  };
  s.Get("/v1/models", models);
  s.Get(R"(/v1/models/(.+))", models);
  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, false);
  });
  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generation(req, res, true);
  });
  // Errors httplib raises itself (unknown route, body over the limit, unreadable request) get
  // OpenAI's error body too, and count as requests.
  s.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    Call call;
    call.endpoint = req.path.size() > 64 ? req.path.substr(0, 64) : req.path;
    call.unix_time = unix_now();
    ApiError e(
        res.status, "invalid_request_error",
        res.status == 404 ? fmt::format("Unknown request URL: {} {}", req.method, call.endpoint)
        : res.status == 413
            ? fmt::format("The request body is too large (limit {} bytes)", o_.max_body_bytes)
            : fmt::format("HTTP error {}", res.status),
        "",
        res.status == 404   ? "unknown_url"
        : res.status == 413 ? "request_too_large"
                            : "");
    if (res.status >= 500) e.type = "server_error";
    res.set_content(to_json_text(e.body()), "application/json");
    finish(call, res.status);
  });
  s.set_exception_handler([this](const httplib::Request& req, httplib::Response& res,
                                 std::exception_ptr ep) {
    Call call;
    call.endpoint = req.path;
    call.unix_time = unix_now();
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content(to_json_text(ApiError(500, "server_error", what).body()), "application/json");
    finish(call, 500);
  });
}

int Server::bind() {
  int port = o_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(o_.host);
  } else if (!http_->bind_to_port(o_.host, port)) {
    port = -1;
  }
  if (port <= 0)
    throw Error("cannot listen on {}:{} (in use, or not an address of this machine)", o_.host,
                o_.port);
  return port;
}

void Server::listen() {
  if (!http_->listen_after_bind()) throw Error("the HTTP server stopped with an error");
}

void Server::stop() { http_->stop(); }

}  // namespace distill::serve
