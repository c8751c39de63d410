#include "serve/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace distill::serve {

size_t complete_utf8_prefix(const std::string& s) {
  // Walk back over at most 3 continuation bytes to the last lead byte and check whether its
  // sequence is complete.
  size_t n = s.size();
  size_t i = n;
  int cont = 0;
  while (i > 0 && cont < 4 && (uint8_t(s[i - 1]) & 0xC0) == 0x80) {
    i--;
    cont++;
  }
  if (i == 0) return n;
  const uint8_t lead = uint8_t(s[i - 1]);
  int need = 0;
  if (lead >= 0xF0 && lead < 0xF8)
    need = 3;
  else if (lead >= 0xE0)
    need = lead < 0xF0 ? 2 : 0;
  else if (lead >= 0xC0)
    need = 1;
  if (need == 0) return n;          // ASCII or a stray byte: nothing to wait for
  return cont >= need ? n : i - 1;  // an incomplete character: hold it back
}

const std::vector<ChoiceResult>& EngineJob::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return pending_ == 0 || !error_.empty(); });
  if (!error_.empty()) throw Error("{}", error_);
  return results_;
}

void EngineJob::finish_choice() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--pending_ == 0) cv_.notify_all();
}

void EngineJob::fail(const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  error_ = error.empty() ? "engine failure" : error;
  cv_.notify_all();
}

Engine::Engine(Model& model, const Tokenizer& tokenizer, int max_batch, int context,
               size_t max_queue, const WatermarkKey* watermark)
    : model_(model),
      tok_(tokenizer),
      max_batch_(max_batch),
      context_(context),
      max_queue_(max_queue) {
  if (context < 2) throw Error("serve: the context must be at least 2 tokens, got {}", context);
  gen_ = std::make_unique<Generator>(model, max_batch, context);
  if (watermark) watermark_ = std::make_unique<WatermarkProcessor>(*watermark, 1.0f);
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& job : queue_) job->fail("the server is shutting down");
}

bool Engine::submit(std::shared_ptr<EngineJob> job) {
  {
    std::lock_guard<std::mutex> jl(job->mu_);
    job->results_.assign(job->choices.size(), {});
    job->pending_ = int(job->choices.size());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_ || queue_.size() >= max_queue_) return false;
  queue_.push_back(std::move(job));
  stats_.queue_depth = int64_t(queue_.size());
  cv_.notify_one();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::run() {
  for (;;) {
    std::vector<std::shared_ptr<EngineJob>> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      // Everything waiting joins this pass.
      while (!queue_.empty()) {
        jobs.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.queue_depth = 0;
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      pass(jobs);
    } catch (const std::exception& e) {
      for (auto& job : jobs) job->fail(e.what());
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = 0;
    stats_.busy_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

namespace {

// One choice being decoded.
struct Sequence {
  EngineJob* job = nullptr;
  int choice = 0;
  const ChoiceSpec* spec = nullptr;
  std::vector<int32_t> ids;  // generated so far
  std::vector<float> raw;    // the last raw logits row (for log-probabilities)
  size_t sent_text = 0;      // streaming: bytes of text already sent
  size_t sent_tokens = 0;    // streaming: tokens already sent
  bool done = false;
};

// Per-choice temperature and nucleus on the raw logits; the Generator then samples at T = 1.
void apply_sampling(const ChoiceSpec& s, float* logits, int V, std::vector<int32_t>& order) {
  if (s.temperature <= 0.0f) {
    const int best = int(std::max_element(logits, logits + V) - logits);
    for (int i = 0; i < V; i++)
      if (i != best) logits[i] = -INFINITY;
    return;
  }
  for (int i = 0; i < V; i++) logits[i] /= s.temperature;
  if (s.top_p >= 1.0f) return;
  order.resize(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  const double mx = logits[order[0]];
  double sum = 0.0;
  for (int i = 0; i < V; i++) sum += std::exp(double(logits[i]) - mx);
  double mass = 0.0;
  int keep = V;
  for (int i = 0; i < V; i++) {
    mass += std::exp(double(logits[order[i]]) - mx) / sum;
    if (mass >= s.top_p) {
      keep = i + 1;
      break;
    }
  }
  for (int i = keep; i < V; i++) logits[order[i]] = -INFINITY;
}

TokenInfo token_info(const float* raw, int V, int k, int32_t chosen) {
  const TokenLogprobs lp = top_logprobs(raw, V, k, chosen);
  TokenInfo t;
  t.id = chosen;
  t.logprob = lp.logprob;
  for (size_t i = 0; i < lp.top_ids.size(); i++)
    t.top.push_back({lp.top_ids[i], lp.top_logprobs[i]});
  return t;
}

class SamplingProcessor final : public LogitsProcessor {
 public:
  SamplingProcessor(std::vector<Sequence>& seqs, WatermarkProcessor* watermark, bool gumbel)
      : seqs_(seqs), watermark_(watermark), gumbel_(gumbel) {}
  void process(int request, const std::vector<int32_t>& context, float* logits,
               int V) override {
    Sequence& s = seqs_[size_t(request)];
    if (s.spec->logprobs >= 0) s.raw.assign(logits, logits + V);
    // Kirchenbauer biases the raw logits (so temperature scales delta, as in the paper);
    // Aaronson picks from the final sampling distribution (after temperature and top-p).
    if (watermark_ && !gumbel_) watermark_->apply(context, logits, V, 1.0f);
    apply_sampling(*s.spec, logits, V, order_);
    if (watermark_ && gumbel_ && s.spec->temperature > 0.0f)
      watermark_->apply(context, logits, V, 1.0f);
  }

 private:
  std::vector<Sequence>& seqs_;
  WatermarkProcessor* watermark_;
  bool gumbel_;
  std::vector<int32_t> order_;
};

// Bytes at the end of `text` that could start a stop string (held back while streaming).
size_t stop_prefix_hold(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const std::string& s : stop)
    for (size_t l = std::min(s.size() - 1, text.size()); l > hold; l--)
      if (text.compare(text.size() - l, l, s, 0, l) == 0) {
        hold = l;
        break;
      }
  return hold;
}

}  // namespace

void Engine::pass(std::vector<std::shared_ptr<EngineJob>>& jobs) {
  const int V = model_.config().vocab_size;
  std::vector<Sequence> seqs;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<uint64_t> seeds;
  int max_tokens = 1;
  int64_t prompt_tokens = 0;
  for (auto& job : jobs) {
    for (size_t c = 0; c < job->choices.size(); c++) {
      const ChoiceSpec& spec = job->choices[c];
      ChoiceResult& result = job->results_[c];
      prompt_tokens += int64_t(spec.prompt.size());
      if (spec.score_prompt) {
        for (const TokenLogprobs& lp : gen_->score(spec.prompt, std::max(spec.logprobs, 0))) {
          TokenInfo t;
          t.id = lp.id;
          t.logprob = lp.logprob;
          for (size_t i = 0; i < lp.top_ids.size(); i++)
            t.top.push_back({lp.top_ids[i], lp.top_logprobs[i]});
          result.prompt_tokens.push_back(std::move(t));
        }
      }
      if (spec.max_tokens == 0 || job->cancelled()) {
        result.finish_reason = "length";
        if (job->on_delta) job->on_delta({int(c), "", {}, "length"});
        job->finish_choice();
        continue;
      }
      Sequence s;
      s.job = job.get();
      s.choice = int(c);
      s.spec = &spec;
      seqs.push_back(std::move(s));
      prompts.push_back(spec.prompt);
      seeds.push_back(spec.seed);
      max_tokens = std::max(max_tokens, spec.max_tokens);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.passes++;
    stats_.sequences += int64_t(seqs.size());
    stats_.prompt_tokens += prompt_tokens;
    stats_.running = int64_t(seqs.size());
  }
  if (seqs.empty()) return;

  const std::optional<int32_t> eos = tok_.eos_id();
  int64_t generated = 0;
  GenerateOptions go;
  go.sampling = SamplingOptions{1.0f, 0, 1.0f, 0.0f};
  go.max_tokens = max_tokens;
  go.request_seeds = seeds;
  if (eos) go.stop_ids = {*eos};
  go.stop = [&](int request, const std::vector<int32_t>& gen_ids) {
    Sequence& s = seqs[size_t(request)];
    if (s.done) return true;
    const ChoiceSpec& spec = *s.spec;
    ChoiceResult& result = s.job->results_[size_t(s.choice)];
    const int32_t id = gen_ids.back();
    generated++;
    s.ids.push_back(id);
    if (spec.logprobs >= 0 && int(s.raw.size()) == V)
      result.tokens.push_back(token_info(s.raw.data(), V, spec.logprobs, id));
    else
      result.tokens.push_back(TokenInfo{id, 0.0f, {}});
    std::string finish;
    if (eos && id == *eos)
      finish = "stop";
    else if (int(s.ids.size()) >= spec.max_tokens ||
             int(spec.prompt.size() + s.ids.size()) >= context_)
      finish = "length";
    if (s.job->cancelled()) finish = "stop";
    const bool streaming = bool(s.job->on_delta);
    std::string text;
    if (!spec.stop.empty() || streaming || !finish.empty()) {
      text = tok_.decode(s.ids, /*skip_special=*/true);
      size_t cut = std::string::npos;
      for (const std::string& stop : spec.stop) cut = std::min(cut, text.find(stop));
      if (cut != std::string::npos) {
        text.resize(cut);
        finish = "stop";
      }
    }
    if (streaming) {
      size_t upto = text.size();
      if (finish.empty()) {
        upto = complete_utf8_prefix(text);
        upto -= stop_prefix_hold(text.substr(0, upto), spec.stop);
      }
      if (upto > s.sent_text || !finish.empty()) {
        StreamDelta d;
        d.choice = s.choice;
        if (upto > s.sent_text) d.text = text.substr(s.sent_text, upto - s.sent_text);
        d.tokens.assign(result.tokens.begin() + long(s.sent_tokens), result.tokens.end());
        d.finish_reason = finish;
        s.sent_text = std::max(s.sent_text, upto);
        s.sent_tokens = result.tokens.size();
        s.job->on_delta(d);
      }
    }
    if (finish.empty()) return false;
    result.text = std::move(text);
    result.finish_reason = finish;
    s.done = true;
    s.job->finish_choice();
    return true;
  };
  SamplingProcessor processor(seqs, watermark_.get(),
                              watermark_ && watermark_->key().scheme == WatermarkScheme::kAaronson);
  gen_->generate(prompts, go, &processor);
  for (Sequence& s : seqs) {
    if (s.done) continue;  // cannot happen: every end goes through the stop hook
    ChoiceResult& result = s.job->results_[size_t(s.choice)];
    result.text = tok_.decode(s.ids, true);
    result.finish_reason = "length";
    if (s.job->on_delta) s.job->on_delta({s.choice, "", {}, "length"});
    s.done = true;
    s.job->finish_choice();
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.generated_tokens += generated;
}

}  // namespace distill::serve
