#include "harvest/harvest.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "distill/teacher_data.h"
#include "harvest/http_client.h"
#include "harvest/openai_response.h"
#include "harvest/pacing.h"
#include "harvest/pricing.h"
#include "harvest/token_mapper.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/chat_template.h"

namespace distill::harvest {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The prompt text as the local tokenizer sees it: the chat template's rendering when the local
// tokenizer has one, else "role: content" lines (what `distill serve` does without a template).
std::string render_messages(const std::vector<ChatMessage>& messages, const ChatTemplate* chat) {
  if (chat) {
    ChatTemplateOptions co;
    co.add_generation_prompt = true;
    return chat->apply(messages, co);
  }
  std::string text;
  for (const ChatMessage& m : messages) text += m.role + ": " + m.content + "\n";
  return text + "assistant: ";
}

struct Job {
  const PromptLine* line = nullptr;
  std::string prompt_text;          // rendered locally
  std::vector<int32_t> prompt_ids;  // local tokenizer
  std::string body;                 // the request JSON
};

class Harvester {
 public:
  Harvester(const HarvestOptions& o, const std::function<void(const HarvestProgress&)>& progress)
      : o_(o), progress_(progress) {}
  HarvestSummary run();

 private:
  void worker(int index);
  // Builds and appends the record of a successful answer; returns its completion tokens.
  int64_t write_record(const Job& job, const HarvestedCompletion& hc, int attempts, double cost);
  bool reserve_cost(double estimate);
  void emit(const std::string& note = "");
  void count_error(const std::string& kind) {
    std::lock_guard<std::mutex> lock(mu_);
    errors_[kind]++;
  }

  const HarvestOptions& o_;
  const std::function<void(const HarvestProgress&)>& progress_;
  bool chat_mode_ = true;
  std::string url_, key_, teacher_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<TokenMapper> mapper_;
  std::optional<Price> price_;
  std::optional<DatasetWriter> writer_;
  std::vector<PromptLine> lines_;
  std::vector<Job> jobs_;
  std::unique_ptr<RatePacer> rpm_, tpm_;
  std::atomic<size_t> next_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> cost_cap_hit_{false};
  std::mutex mu_;  // guards everything below and the writer
  std::string fatal_;
  std::map<std::string, int64_t> errors_;
  int64_t total_ = 0, skipped_ = 0, failed_ = 0, requests_ = 0, tokens_ = 0, done_run_ = 0;
  double spent_ = 0.0, reserved_ = 0.0;
  Clock::time_point t0_ = Clock::now();
};

HarvestSummary Harvester::run() {
  if (o_.mode != "chat" && o_.mode != "completions")
    throw Error("--mode must be chat or completions, got '{}'", o_.mode);
  chat_mode_ = o_.mode == "chat";
  if (o_.endpoint.rfind("http://", 0) != 0 && o_.endpoint.rfind("https://", 0) != 0)
    throw Error("--endpoint must be an http:// or https:// URL, got '{}'", o_.endpoint);
  if (o_.model.empty()) throw Error("--model must name the endpoint's model");
  if (o_.concurrency < 1 || o_.concurrency > 1024)
    throw Error("--concurrency must be in [1, 1024]");
  if (o_.top_logprobs < 1 || o_.top_logprobs > 20) throw Error("--top-logprobs must be in [1, 20]");
  if (o_.max_tokens < 1) throw Error("--max-tokens must be positive");
  if (o_.retries < 0) throw Error("--retries must be >= 0");
  if (o_.rpm < 0 || o_.tpm < 0 || o_.max_cost < 0)
    throw Error("--rpm, --tpm and --max-cost must be >= 0");
  url_ = completions_url(o_.endpoint, chat_mode_);
  teacher_ = o_.model + " @ " + url_;
  if (!o_.api_key_env.empty()) {
    const char* key = std::getenv(o_.api_key_env.c_str());
    if (key) key_ = key;
  }
  if (!o_.pricing.empty()) price_ = load_price(o_.pricing, o_.model);
  if (o_.price_input >= 0 || o_.price_output >= 0) {
    Price p = price_.value_or(Price{});
    if (o_.price_input >= 0) p.input_per_mtok = o_.price_input;
    if (o_.price_output >= 0) p.output_per_mtok = o_.price_output;
    price_ = p;
  }
  if (o_.max_cost > 0 && !price_)
    throw Error(
        "--max-cost needs the price of '{}': --pricing FILE with an entry for it, or "
        "--price-input and --price-output",
        o_.model);

  std::unique_ptr<ChatTemplate> chat_template;
  if (o_.tokenizer.empty()) {
    tok_ = std::make_unique<ByteLevelTokenizer>();
  } else if (fs::is_directory(o_.tokenizer)) {
    tok_ = load_model_tokenizer(o_.tokenizer);
    try {
      chat_template = std::make_unique<ChatTemplate>(ChatTemplate::from_file(o_.tokenizer));
    } catch (const Error&) {
    }
  } else {
    tok_ = load_tokenizer(o_.tokenizer);
  }
  mapper_ = std::make_unique<TokenMapper>(*tok_);

  lines_ = read_prompt_file(o_.prompts);
  if (lines_.empty()) throw Error("{}: no prompts", o_.prompts);
  DatasetHeader h;
  h.tokenizer_fingerprint = tok_->fingerprint();
  h.vocab_size = tok_->vocab_size();
  h.k = o_.top_logprobs;
  h.encoding = logprob_encoding_from_name(o_.encoding);
  h.teacher = teacher_;
  h.sampling = {{"mode", "harvest-" + o_.mode},
                {"temperature", o_.temperature},
                {"top_p", o_.top_p},
                {"max_tokens", o_.max_tokens},
                {"top_logprobs", o_.top_logprobs}};
  if (o_.seed) h.sampling["seed"] = *o_.seed;
  const bool resume = fs::exists(fs::path(o_.out) / "dataset.json");
  writer_.emplace(DatasetWriter::open(o_.out, h, resume));
  if (resume && writer_->size() > 0) {
    // The spend of the records already harvested counts against the cap.
    const DatasetReader r = DatasetReader::open(o_.out);
    for (int64_t i = 0; i < r.size(); i++) {
      const json j = r.record_json(i);
      if (j.contains("cost") && j["cost"].is_number()) spent_ += j["cost"].get<double>();
    }
  }

  total_ = int64_t(lines_.size());
  for (const PromptLine& pl : lines_) {
    if (writer_->completed(pl.id, 0)) {
      skipped_++;
      continue;
    }
    Job job;
    job.line = &pl;
    json body = {{"model", o_.model},
                 {"max_tokens", o_.max_tokens},
                 {"temperature", o_.temperature},
                 {"top_p", o_.top_p}};
    if (o_.seed) body["seed"] = (*o_.seed ^ fnv1a(pl.id)) & 0x7fffffffffffffffull;
    const std::vector<ChatMessage> messages =
        pl.prompt ? std::vector<ChatMessage>{{"user", *pl.prompt}} : pl.messages;
    if (chat_mode_) {
      json m = json::array();
      for (const ChatMessage& msg : messages)
        m.push_back({{"role", msg.role}, {"content", msg.content}});
      body["messages"] = m;
      body["logprobs"] = true;
      body["top_logprobs"] = o_.top_logprobs;
      job.prompt_text = render_messages(messages, chat_template.get());
    } else {
      job.prompt_text = pl.prompt ? *pl.prompt : render_messages(pl.messages, chat_template.get());
      body["prompt"] = job.prompt_text;
      body["logprobs"] = o_.top_logprobs;
    }
    job.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    job.prompt_ids = tok_->encode(job.prompt_text, EncodeOptions{true, chat_template != nullptr});
    jobs_.push_back(std::move(job));
  }
  if (writer_->resumed().records > 0)
    emit(fmt::format("resuming: {} of {} prompts already harvested", skipped_, total_));

  rpm_ = std::make_unique<RatePacer>(o_.rpm);
  tpm_ = std::make_unique<RatePacer>(o_.tpm);
  std::vector<std::thread> workers;
  const int n = std::min<int>(o_.concurrency, std::max<int>(1, int(jobs_.size())));
  std::atomic<int> active{0};
  for (int i = 0; i < n && !jobs_.empty(); i++) {
    active++;
    workers.emplace_back([this, i, &active] {
      try {
        worker(i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu_);
        if (fatal_.empty()) fatal_ = e.what();
        stop_ = true;
      }
      active--;
    });
  }
  auto last = Clock::now();
  for (;;) {
    const bool running = active > 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (Clock::now() - last > std::chrono::milliseconds(500)) {
      emit();
      last = Clock::now();
    }
    if (!running) break;
  }
  for (auto& w : workers) w.join();
  emit();
  writer_->close();
  if (!fatal_.empty()) throw Error("{}", fatal_);
  HarvestSummary s;
  s.total = total_;
  s.done = skipped_ + done_run_;
  s.failed = failed_;
  s.cost = spent_;
  s.stopped_by_cost = cost_cap_hit_;
  return s;
}

bool Harvester::reserve_cost(double estimate) {
  std::lock_guard<std::mutex> lock(mu_);
  if (o_.max_cost > 0 && spent_ + reserved_ + estimate > o_.max_cost) {
    if (!cost_cap_hit_.exchange(true)) stop_ = true;
    return false;
  }
  reserved_ += estimate;
  return true;
}

void Harvester::emit(const std::string& note) {
  HarvestProgress p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    p.total = total_;
    p.skipped = skipped_;
    p.done = skipped_ + done_run_;
    p.failed = failed_;
    p.requests = requests_;
    p.tokens = tokens_;
    p.errors = errors_;
    p.cost = spent_;
    p.priced = bool(price_);
  }
  p.elapsed_s = std::chrono::duration<double>(Clock::now() - t0_).count();
  if (p.elapsed_s > 0) {
    p.requests_per_s = double(p.requests) / p.elapsed_s;
    p.tokens_per_s = double(p.tokens) / p.elapsed_s;
  }
  const int64_t run_done = p.done - p.skipped;
  p.eta_s =
      run_done > 0 ? p.elapsed_s / double(run_done) * double(p.total - p.done - p.failed) : 0.0;
  p.note = note;
  if (progress_) progress_(p);
}

int64_t Harvester::write_record(const Job& job, const HarvestedCompletion& hc, int attempts,
                                double cost) {
  DatasetRecord r;
  r.id = job.line->id;
  r.sample = 0;
  r.prompt = job.prompt_text;
  r.completion = hc.text;
  r.source = o_.prompts;
  r.teacher = teacher_;
  r.tokens = job.prompt_ids;
  r.prompt_tokens = int32_t(job.prompt_ids.size());
  r.rows.resize(0, o_.top_logprobs);
  // The endpoint's tokens as local ids, when every one of them maps.
  std::vector<int32_t> mapped;
  bool all_mapped = !hc.tokens.empty();
  for (const HarvestedToken& t : hc.tokens) {
    const auto id = mapper_->id(t.bytes);
    if (!id) {
      all_mapped = false;
      break;
    }
    mapped.push_back(*id);
  }
  json extra = {
      {"finish_reason", hc.finish_reason}, {"attempts", attempts}, {"logprobs_mapped", all_mapped}};
  if (price_) extra["cost"] = cost;
  if (hc.prompt_tokens >= 0)
    extra["usage"] = {{"prompt_tokens", hc.prompt_tokens},
                      {"completion_tokens", hc.completion_tokens}};
  if (all_mapped) {
    r.tokens.insert(r.tokens.end(), mapped.begin(), mapped.end());
    std::vector<int32_t> ids;
    std::vector<float> lps;
    for (const HarvestedToken& t : hc.tokens) {
      ids.clear();
      lps.clear();
      for (const auto& [bytes, lp] : t.top) {
        const auto id = mapper_->id(bytes);
        if (!id || std::find(ids.begin(), ids.end(), *id) != ids.end()) continue;
        if (int(ids.size()) == o_.top_logprobs) break;
        ids.push_back(*id);
        lps.push_back(std::min(lp, 0.0f));
      }
      r.rows.append(ids.data(), lps.data(), int(ids.size()));  // the tail is what they leave
    }
    r.first_target = r.prompt_tokens;
  } else {
    // Not this vocabulary (or no logprobs): the text re-tokenized locally, no teacher rows; the
    // endpoint's log-probabilities are kept as JSON.
    const std::vector<int32_t> ids = tok_->encode(hc.text);
    r.tokens.insert(r.tokens.end(), ids.begin(), ids.end());
    r.first_target = int32_t(r.tokens.size());
    if (!hc.tokens.empty()) {
      json lp = json::array();
      for (const HarvestedToken& t : hc.tokens) {
        json top = json::array();
        for (const auto& [bytes, v] : t.top) top.push_back({bytes, v});
        lp.push_back({{"token", t.bytes}, {"logprob", t.logprob}, {"top", top}});
      }
      extra["teacher_logprobs"] = lp;
    }
  }
  r.extra = extra;
  std::lock_guard<std::mutex> lock(mu_);
  writer_->append(r);
  return hc.completion_tokens >= 0 ? hc.completion_tokens : int64_t(hc.tokens.size());
}

void Harvester::worker(int index) {
  HttpClient client;
  Rng rng(uint64_t(index) * 7919 + uint64_t(Clock::now().time_since_epoch().count()));
  for (;;) {
    if (stop_) return;
    const size_t i = next_.fetch_add(1);
    if (i >= jobs_.size()) return;
    const Job& job = jobs_[i];
    const double est_tokens = double(job.prompt_ids.size() + size_t(o_.max_tokens));
    const double est_cost =
        price_ ? price_->cost(int64_t(job.prompt_ids.size()), o_.max_tokens) : 0.0;
    bool finished = false;
    for (int attempt = 0; !finished && !stop_; attempt++) {
      if (!reserve_cost(est_cost)) return;
      if (!rpm_->acquire(1.0, stop_) || !tpm_->acquire(est_tokens, stop_)) {
        std::lock_guard<std::mutex> lock(mu_);
        reserved_ -= est_cost;
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_++;
      }
      const HttpResponse res = client.post_json(url_, job.body, key_, o_.timeout_s);
      std::string kind;
      double cost = 0.0;
      if (res.error != TransportError::None) {
        kind = transport_error_name(res.error);
      } else if (res.status == 200) {
        std::optional<HarvestedCompletion> hc;
        try {
          hc = parse_completion_response(res.body, chat_mode_);
        } catch (const Error&) {
          kind = "malformed";
        }
        if (hc) {
          const int64_t in =
              hc->prompt_tokens >= 0 ? hc->prompt_tokens : int64_t(job.prompt_ids.size());
          const int64_t out =
              hc->completion_tokens >= 0 ? hc->completion_tokens : int64_t(hc->tokens.size());
          cost = price_ ? price_->cost(in, out) : 0.0;
          try {
            const int64_t got = write_record(job, *hc, attempt + 1, cost);
            tpm_->adjust(double(in + out) - est_tokens);
            std::lock_guard<std::mutex> lock(mu_);
            tokens_ += got;
            done_run_++;
            finished = true;
          } catch (const std::exception& e) {
            std::lock_guard<std::mutex> lock(mu_);
            fatal_ =
                fmt::format("prompt '{}': cannot write the record: {}", job.line->id, e.what());
            reserved_ -= est_cost;
            stop_ = true;
            return;
          }
        }
      } else if (res.status == 429) {
        kind = "429";
      } else if (res.status >= 500 || res.status == 408) {
        kind = res.status == 408 ? "timeout" : "5xx";
      } else {
        std::string message = res.body.substr(0, 300);
        const json j = json::parse(res.body, nullptr, false);
        if (j.is_object() && j.contains("error") && j["error"].is_object() &&
            j["error"].contains("message") && j["error"]["message"].is_string())
          message = j["error"]["message"].get<std::string>();
        std::lock_guard<std::mutex> lock(mu_);
        reserved_ -= est_cost;
        errors_[std::to_string(res.status)]++;
        if (res.status == 401 || res.status == 403 || res.status == 404) {
          fatal_ = fmt::format("{} answered {}: {}{}", url_, res.status, message,
                               res.status == 401 && key_.empty()
                                   ? fmt::format(" (no key: ${} is not set)", o_.api_key_env)
                                   : "");
          stop_ = true;
          return;
        }
        failed_++;  // a request the endpoint refuses (400): retrying cannot help
        break;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        reserved_ -= est_cost;
        spent_ += cost;
      }
      if (finished) break;
      count_error(kind);
      if (attempt >= o_.retries) {
        std::lock_guard<std::mutex> lock(mu_);
        failed_++;
        break;
      }
      const double delay =
          backoff_delay(attempt, o_.backoff_base_s, o_.backoff_max_s, res.retry_after_s, rng);
      const auto until = Clock::now() + std::chrono::duration<double>(delay);
      while (!stop_ && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace

HarvestSummary run_harvest(const HarvestOptions& options,
                           const std::function<void(const HarvestProgress&)>& progress) {
  Harvester h(options, progress);
  return h.run();
}

}  // namespace distill::harvest
