// POST /v1/completions and /v1/chat/completions: authenticate, draw an injected fault (testing),
// parse, check the model, rate-limit, tokenize, queue the choices on the engine, and answer as
// one JSON body or as server-sent events.
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <thread>

#include "core/error.h"
#include "serve/api_error.h"
#include "serve/openai_format.h"
#include "serve/server.h"
#include "serve/server_call.h"
#include "serve/server_metrics.h"
#include "tokenizer/chat_template.h"

namespace distill::serve {

using json = nlohmann::json;

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string sse(const json& j) { return "data: " + to_json_text(j) + "\n\n"; }

// Events of a streamed job, handed from the engine thread to the connection's thread.
struct StreamQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<StreamDelta> events;
  int finished = 0;
};

}  // namespace

void Server::handle_generation(const httplib::Request& req, httplib::Response& res, bool chat) {
  auto call = std::make_shared<Call>();
  call->endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
  call->unix_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  try {
    call->key = authenticate(req);
    const Fault fault = faults_ ? faults_->draw() : Fault::None;
    if (fault == Fault::RateLimit) {
      ApiError e(429, "requests", "Rate limit reached (injected fault)", "", "rate_limit_exceeded");
      e.retry_after_s = faults_->options().retry_after_s;
      throw e;
    }
    if (fault == Fault::ServerError) throw ApiError(500, "server_error", "injected fault", "", "");
    if (fault == Fault::Slow)
      std::this_thread::sleep_for(std::chrono::milliseconds(faults_->options().slow_ms));
    if (fault == Fault::Malformed) {
      res.set_content("{\"id\": \"broken\", \"choices\": [{\"text\": \"unterminated",
                      "application/json");
      finish(*call, 200);
      return;
    }

    ApiRequest& a = call->request;
    a = parse_api_request(req.body, chat, o_.limits);
    call->logprobs = a.logprobs;
    if (a.model != model_name_)
      throw ApiError(
          404, "invalid_request_error",
          fmt::format("The model '{}' does not exist (this server serves '{}')",
                      a.model.size() > 200 ? a.model.substr(0, 200) + "..." : a.model, model_name_),
          "model", "model_not_found");
    if (call->key) {
      std::string kind;
      if (auto wait = limiter_->admit(*call->key, &kind)) {
        metrics_->rate_limited(kind);
        ApiError e(
            429, kind,
            fmt::format("Rate limit reached for key '{}': {} per minute", call->key->id, kind), "",
            "rate_limit_exceeded");
        e.retry_after_s = *wait;
        throw e;
      }
    }

    // Prompts as token ids.
    const int V = tok_->vocab_size();
    std::string hashed;
    if (chat) {
      std::string text;
      if (chat_) {
        std::vector<ChatMessage> messages;
        for (const auto& m : a.messages) messages.push_back({m.role, m.content});
        ChatTemplateOptions co;
        co.add_generation_prompt = true;
        try {
          std::lock_guard<std::mutex> lock(chat_mu_);
          text = chat_->apply(messages, co);
        } catch (const Error& e) {
          throw bad_request("messages", "the chat template rejected the messages: {}", e.what());
        }
      } else {
        for (const auto& m : a.messages) text += m.role + ": " + m.content + "\n";
        text += "assistant: ";
      }
      call->prompt_texts.push_back(text);
      call->prompt_ids.push_back(tok_->encode(text, EncodeOptions{true, bool(chat_)}));
      hashed = text;
    } else {
      for (const PromptInput& p : a.prompts) {
        if (p.is_ids) {
          for (int32_t id : p.ids)
            if (id >= V)
              throw bad_request("prompt", "token id {} is outside the vocabulary (size {})", id, V);
          call->prompt_ids.push_back(p.ids);
          call->prompt_texts.push_back(tok_->decode(p.ids));
        } else {
          call->prompt_ids.push_back(tok_->encode(p.text, EncodeOptions{true, false}));
          call->prompt_texts.push_back(p.text);
        }
        hashed += call->prompt_texts.back();
        hashed += '\0';
      }
    }
    call->prompt_sha256 = sha256_hex(hashed);
    for (const std::string& t : call->prompt_texts) call->prompt_chars += int64_t(t.size());

    const int context = engine_->context();
    size_t longest = 0;
    for (auto& ids : call->prompt_ids) {
      if (ids.empty()) {
        if (!tok_->bos_id()) throw bad_request(chat ? "messages" : "prompt", "the prompt is empty");
        ids.push_back(*tok_->bos_id());
      }
      longest = std::max(longest, ids.size());
      call->tokens_in += int64_t(ids.size());
    }
    if (int(longest) >= context)
      throw ApiError(400, "invalid_request_error",
                     fmt::format("This model's maximum context length is {} tokens, however the "
                                 "prompt has {} tokens",
                                 context, longest),
                     chat ? "messages" : "prompt", "context_length_exceeded");
    const int room = context - int(longest);
    const int max_tokens =
        a.max_tokens ? *a.max_tokens : (chat ? std::min(o_.limits.max_tokens, room) : 16);
    if (max_tokens > room)
      throw ApiError(400, "invalid_request_error",
                     fmt::format("This model's maximum context length is {} tokens, however you "
                                 "requested {} tokens ({} in the prompt, {} for the completion)",
                                 context, int(longest) + max_tokens, longest, max_tokens),
                     "max_tokens", "context_length_exceeded");
    // The KV cache reserves prompt + completion positions (all but the last token) per choice.
    const int positions = int(longest) + max_tokens - 1;
    if (positions > engine_->pool_positions())
      throw ApiError(400, "invalid_request_error",
                     fmt::format("The request needs {} KV cache positions ({} in the prompt, {} "
                                 "for the completion) but the server's KV cache pool holds {}",
                                 positions, longest, max_tokens, engine_->pool_positions()),
                     "max_tokens", "context_length_exceeded");

    call->id = fmt::format("{}-{:x}{:06x}", chat ? "chatcmpl" : "cmpl", seed_base_ & 0xffffff,
                           next_id_.fetch_add(1));
    call->created = int64_t(call->unix_time);
    call->job = std::make_shared<EngineJob>();
    const uint64_t request_seed = a.seed ? *a.seed : splitmix(seed_base_ ^ next_id_.fetch_add(1));
    for (size_t p = 0; p < call->prompt_ids.size(); p++)
      for (int j = 0; j < a.n; j++) {
        ChoiceSpec c;
        c.prompt = call->prompt_ids[p];
        c.max_tokens = max_tokens;
        c.temperature = a.temperature;
        c.top_p = a.top_p;
        c.seed = splitmix(request_seed + uint64_t(p * size_t(a.n) + size_t(j)));
        c.logprobs = a.logprobs;
        c.score_prompt = a.echo && a.logprobs >= 0;
        c.stop = a.stop;
        call->job->choices.push_back(std::move(c));
      }
    if (a.stream) {
      stream(call, res);
      return;
    }
    if (!engine_->submit(call->job)) {
      metrics_->rate_limited("queue");
      ApiError e(429, "server_busy", "The server is busy: too many requests waiting", "",
                 "queue_full");
      e.retry_after_s = 1;
      throw e;
    }
    const std::vector<ChoiceResult>& results = call->job->wait();

    json choices = json::array();
    for (size_t i = 0; i < results.size(); i++) {
      const ChoiceResult& r = results[i];
      const size_t p = i / size_t(a.n);
      call->tokens_out += int64_t(r.tokens.size());
      json choice = {{"index", i}, {"finish_reason", r.finish_reason}};
      if (chat) {
        choice["message"] = {{"role", "assistant"}, {"content", r.text}};
        choice["logprobs"] =
            a.logprobs >= 0 ? json{{"content", chat_logprobs(*tok_, r.tokens)}} : json();
      } else {
        const std::string prefix = a.echo ? call->prompt_texts[p] : "";
        choice["text"] = prefix + r.text;
        if (a.logprobs < 0) {
          choice["logprobs"] = nullptr;
        } else if (a.echo) {
          std::vector<TokenInfo> all = r.prompt_tokens;
          all.insert(all.end(), r.tokens.begin(), r.tokens.end());
          choice["logprobs"] =
              completion_logprobs(*tok_, all, 0, true, call->prompt_ids[p].front());
        } else {
          choice["logprobs"] = completion_logprobs(*tok_, r.tokens, 0);
        }
      }
      choices.push_back(std::move(choice));
    }
    json body = {{"id", call->id},
                 {"object", chat ? "chat.completion" : "text_completion"},
                 {"created", call->created},
                 {"model", model_name_},
                 {"system_fingerprint", nullptr},
                 {"choices", std::move(choices)},
                 {"usage", usage_json(call->tokens_in, call->tokens_out)}};
    const std::string text = to_json_text(body);
    if (fault == Fault::Truncated) {
      // Promise the whole body, send half, then fail the provider: httplib closes the connection.
      res.set_content_provider(text.size(), "application/json",
                               [text](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset == 0) sink.write(text.data(), text.size() / 2);
                                 return false;
                               });
      finish(*call, 200);
      return;
    }
    res.set_content(text, "application/json");
    finish(*call, 200);
  } catch (const std::exception& e) {
    if (call->job) call->job->cancel();
    answer_error(*call, res, e);
  }
}

void Server::stream(const std::shared_ptr<Call>& call, httplib::Response& res) {
  auto q = std::make_shared<StreamQueue>();
  call->job->on_delta = [q](const StreamDelta& d) {
    std::lock_guard<std::mutex> lock(q->mu);
    q->events.push_back(d);
    if (!d.finish_reason.empty()) q->finished++;
    q->cv.notify_all();
  };
  if (!engine_->submit(call->job)) {
    metrics_->rate_limited("queue");
    ApiError e(429, "server_busy", "The server is busy: too many requests waiting", "",
               "queue_full");
    e.retry_after_s = 1;
    throw e;
  }
  const bool chat = call->request.chat;
  const int total = int(call->job->choices.size());
  auto offsets = std::make_shared<std::vector<size_t>>(size_t(total), 0);
  auto started = std::make_shared<bool>(false);
  auto chunk = [this, call](json choice) {
    return sse({{"id", call->id},
                {"object", call->request.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", call->created},
                {"model", model_name_},
                {"system_fingerprint", nullptr},
                {"choices", json::array({std::move(choice)})}});
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, call, q, chat, total, offsets, started, chunk](size_t, httplib::DataSink& sink) {
        const ApiRequest& a = call->request;
        auto write = [&](const std::string& s) {
          if (sink.write(s.data(), s.size())) return true;
          call->job->cancel();
          return false;
        };
        if (!*started) {
          *started = true;
          for (int i = 0; i < total; i++) {
            if (chat) {
              if (!write(chunk({{"index", i},
                                {"delta", {{"role", "assistant"}, {"content", ""}}},
                                {"logprobs", nullptr},
                                {"finish_reason", nullptr}})))
                return false;
            } else if (a.echo) {
              const size_t p = size_t(i) / size_t(a.n);
              const std::string& text = call->prompt_texts[p];
              (*offsets)[size_t(i)] = text.size();
              if (!write(chunk({{"index", i},
                                {"text", text},
                                {"logprobs", nullptr},
                                {"finish_reason", nullptr}})))
                return false;
            }
          }
        }
        std::deque<StreamDelta> events;
        bool all_done = false;
        {
          std::unique_lock<std::mutex> lock(q->mu);
          q->cv.wait_for(lock, std::chrono::milliseconds(200),
                         [&] { return !q->events.empty() || q->finished == total; });
          events.swap(q->events);
          all_done = q->finished == total;
        }
        for (const StreamDelta& d : events) {
          call->tokens_out += int64_t(d.tokens.size());
          json choice = {
              {"index", d.choice},
              {"finish_reason", d.finish_reason.empty() ? json() : json(d.finish_reason)}};
          json lp;
          if (a.logprobs >= 0 && !d.tokens.empty())
            lp = chat ? json{{"content", chat_logprobs(*tok_, d.tokens)}}
                      : completion_logprobs(*tok_, d.tokens, (*offsets)[size_t(d.choice)]);
          if (chat) {
            choice["delta"] = d.text.empty() && !d.finish_reason.empty()
                                  ? json::object()
                                  : json{{"content", d.text}};
          } else {
            choice["text"] = d.text;
          }
          choice["logprobs"] = lp;
          (*offsets)[size_t(d.choice)] += d.text.size();
          if (!write(chunk(std::move(choice)))) return false;
        }
        if (!all_done) {
          const std::string error = call->job->error();
          if (error.empty()) return true;  // more to come
          write(sse(ApiError(500, "server_error", error).body()));
          return false;
        }
        if (a.include_usage &&
            !write(sse({{"id", call->id},
                        {"object", chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", call->created},
                        {"model", model_name_},
                        {"choices", json::array()},
                        {"usage", usage_json(call->tokens_in, call->tokens_out)}})))
          return false;
        if (!write("data: [DONE]\n\n")) return false;
        sink.done();
        return true;
      },
      [this, call](bool success) {
        if (!success) call->job->cancel();
        // 499: the client went away before the stream ended (nginx's convention).
        finish(*call, success ? 200 : 499);
      });
}

}  // namespace distill::serve
