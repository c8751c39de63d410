#include "harvest/api_teacher.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "harvest/http_client.h"
#include "harvest/openai_response.h"

namespace distill::harvest {

ApiTeacher::ApiTeacher(const ApiTeacherOptions& options, const Tokenizer& tokenizer)
    : o_(options), mapper_(tokenizer) {
  if (o_.endpoint.empty()) throw Error("--teacher-endpoint is empty");
  if (o_.top_logprobs < 1 || o_.top_logprobs > 20)
    throw Error("--teacher-top-logprobs {}: expected 1..20", o_.top_logprobs);
  if (o_.concurrency < 1) throw Error("--teacher-concurrency must be >= 1");
  url_ = completions_url(o_.endpoint, /*chat=*/false);
  if (!o_.api_key_env.empty())
    if (const char* key = std::getenv(o_.api_key_env.c_str())) key_ = key;
}

ScoredText ApiTeacher::score_one(const std::vector<int32_t>& ids, void* client_ptr) {
  HttpClient& client = *static_cast<HttpClient*>(client_ptr);
  const nlohmann::json body = {{"model", o_.model}, {"prompt", ids}, {"echo", true},
                               {"logprobs", o_.top_logprobs}, {"max_tokens", 0},
                               {"temperature", 0}};
  const std::string payload = body.dump();
  std::string last;
  for (int attempt = 0; attempt <= o_.retries; attempt++) {
    if (attempt > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(200 << std::min(attempt, 6)));
    requests_++;
    const HttpResponse r = client.post_json(url_, payload, key_, o_.timeout_s);
    if (r.error != TransportError::None) {
      last = fmt::format("{} ({})", transport_error_name(r.error), r.error_text);
      continue;
    }
    if (r.status == 429 || r.status >= 500) {
      last = fmt::format("HTTP {}", r.status);
      continue;
    }
    if (r.status != 200)
      throw Error("teacher endpoint {}: HTTP {}: {}", url_, r.status, r.body.substr(0, 300));
    HarvestedCompletion c;
    try {
      c = parse_completion_response(r.body, /*chat=*/false);
    } catch (const Error& e) {
      last = fmt::format("malformed response: {}", e.what());
      continue;
    }
    if (c.tokens.size() != ids.size())
      throw Error("teacher endpoint {} echoed {} tokens with log-probabilities for a prompt of "
                  "{}: it must support echo + logprobs on /completions with token-id prompts",
                  url_, c.tokens.size(), ids.size());
    ScoredText s;
    s.k = o_.top_logprobs;
    const size_t n = ids.size(), k = size_t(s.k);
    s.top_ids.assign(n * k, -1);
    s.top_logprobs.assign(n * k, -INFINITY);
    s.counts.assign(n, 0);
    s.tail.assign(n, 0.0f);
    for (size_t t = 1; t < n; t++) {
      const HarvestedToken& tok = c.tokens[t];
      if (tok.top.empty())
        throw Error("teacher endpoint {} returned no top_logprobs for prompt token {}: it must "
                    "support echo + logprobs on /completions", url_, t);
      double mass = 0.0;
      int m = 0;
      for (const auto& [bytes, lp] : tok.top) {
        if (m == int(k)) break;
        const auto id = mapper_.id(bytes);
        if (!id) continue;  // an alternative outside the vocabulary counts in the tail
        s.top_ids[t * k + m] = *id;
        s.top_logprobs[t * k + m] = lp;
        mass += std::exp(double(lp));
        m++;
      }
      s.counts[t] = m;
      s.tail[t] = float(std::max(0.0, 1.0 - mass));
    }
    return s;
  }
  throw Error("teacher endpoint {}: scoring failed after {} attempts: {}", url_, o_.retries + 1,
              last);
}

std::vector<ScoredText> ApiTeacher::score(const std::vector<std::vector<int32_t>>& sequences) {
  std::vector<ScoredText> out(sequences.size());
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  auto worker = [&]() {
    HttpClient client;
    for (size_t i; (i = next++) < sequences.size();) {
      try {
        out[i] = score_one(sequences[i], &client);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        next = sequences.size();
      }
    }
  };
  const int threads = std::min<int>(o_.concurrency, int(sequences.size()));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; t++) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace distill::harvest
