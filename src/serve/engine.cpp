#include "serve/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "infer/sampler.h"

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

namespace {

// Per-choice temperature and nucleus on the raw logits; the decoder then samples at T = 1.
// top_p masks the tokens outside the nucleus with -inf (sampling_candidates ranks only the
// tokens near the cut); keep is per-token scratch.
void apply_sampling(const ChoiceSpec& s, float* logits, int V, std::vector<uint8_t>& keep) {
  if (s.temperature <= 0.0f) {
    const int best = int(std::max_element(logits, logits + V) - logits);
    for (int i = 0; i < V; i++)
      if (i != best) logits[i] = -INFINITY;
    return;
  }
  for (int i = 0; i < V; i++) logits[i] /= s.temperature;
  if (s.top_p >= 1.0f) return;
  const SamplingCandidates c =
      sampling_candidates(logits, V, SamplingOptions{1.0f, 0, s.top_p, 0.0f});
  keep.assign(size_t(V), 0);
  for (int32_t t : c.ids) keep[size_t(t)] = 1;
  for (int i = 0; i < V; i++)
    if (!keep[size_t(i)]) logits[i] = -INFINITY;
}

TokenInfo token_info(const TokenLogprobs& lp) {
  TokenInfo t;
  t.id = lp.id;
  t.logprob = lp.logprob;
  for (size_t i = 0; i < lp.top_ids.size(); i++)
    t.top.push_back({lp.top_ids[i], lp.top_logprobs[i]});
  return t;
}

TokenInfo token_info(const float* raw, int V, int k, int32_t chosen) {
  return token_info(top_logprobs(raw, V, k, chosen));
}

class SamplingProcessor final : public LogitsProcessor {
 public:
  // decodable: the tokenizer's vocabulary; ids from there to the model's V (a vocabulary padded
  // past the tokenizer's, as many HF checkpoints are) have no text and are never sampled.
  SamplingProcessor(std::vector<EngineSequence>& seqs, WatermarkProcessor* watermark, bool gumbel,
                    int decodable)
      : seqs_(seqs), watermark_(watermark), gumbel_(gumbel), decodable_(decodable) {}
  void process(int request, const std::vector<int32_t>& context, float* logits,
               int V) override {
    EngineSequence& s = seqs_[size_t(request)];
    for (int i = decodable_; i < V; i++) logits[i] = -INFINITY;
    if (s.spec->logprobs >= 0) s.raw.assign(logits, logits + V);
    // Kirchenbauer biases the raw logits (so temperature scales delta, as in the paper);
    // Aaronson picks from the final sampling distribution (after temperature and top-p).
    if (watermark_ && !gumbel_) watermark_->apply(context, logits, V, 1.0f);
    apply_sampling(*s.spec, logits, V, keep_);
    if (watermark_ && gumbel_ && s.spec->temperature > 0.0f)
      watermark_->apply(context, logits, V, 1.0f);
  }

 private:
  std::vector<EngineSequence>& seqs_;
  WatermarkProcessor* watermark_;
  bool gumbel_;
  int decodable_;
  std::vector<uint8_t> keep_;
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

Engine::Engine(Model& model, const Tokenizer& tokenizer, int max_batch, int context,
               size_t max_queue, const WatermarkKey* watermark, const DecoderOptions& decoder)
    : model_(model),
      tok_(tokenizer),
      max_batch_(max_batch),
      context_(context),
      max_queue_(max_queue) {
  if (context < 2) throw Error("serve: the context must be at least 2 tokens, got {}", context);
  decoder_ = std::make_unique<BatchDecoder>(model, max_batch, context, decoder);
  pool_positions_ = decoder_->cache().blocks * decoder_->cache().block_size;
  seqs_.resize(size_t(max_batch));
  if (watermark) watermark_ = std::make_unique<WatermarkProcessor>(*watermark, 1.0f);
  processor_ = std::make_unique<SamplingProcessor>(
      seqs_, watermark_.get(), watermark_ && watermark_->key().scheme == WatermarkScheme::kAaronson,
      tokenizer.vocab_size());
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
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty() || decoder_->live() > 0; });
      if (stop_) break;
    }
    const auto t0 = std::chrono::steady_clock::now();
    try {
      admit_waiting();
      drop_cancelled();
      if (decoder_->live() > 0) step();
    } catch (const std::exception& e) {
      fail_live(e.what());
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = decoder_->live();
    stats_.busy_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  fail_live("the server is shutting down");
}

void Engine::admit_waiting() {
  // New prompt rows started this step: at most one prefill chunk's worth (and one sequence at
  // least). Same-length requests that arrive together would otherwise be admitted together,
  // finish together and come back together, and every step that admits such a cohort makes its
  // own first tokens and everyone's next token wait for all of their prompts; admitted a chunk's
  // worth at a time they finish at different steps and the cohort dissolves.
  const int chunk = decoder_->prefill_chunk();
  int started_rows = 0;
  for (;;) {
    std::shared_ptr<EngineJob> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) return;
      job = queue_.front();  // only this thread pops: it stays the front while we work
    }
    for (; next_choice_ < job->choices.size(); next_choice_++) {
      if (!job->error().empty()) break;  // failed: its other choices are dropped
      const ChoiceSpec& spec = job->choices[next_choice_];
      ChoiceResult& result = job->results_[next_choice_];
      const bool decode = spec.max_tokens > 0 && !job->cancelled();
      int id = -1;
      if (decode) {
        for (size_t i = 0; i < seqs_.size() && id < 0; i++)
          if (!seqs_[i].job) id = int(i);
        if (id < 0) return;  // the batch is full
        const int rows = chunk > 0 ? std::min(int(spec.prompt.size()), chunk) : 0;
        if (started_rows > 0 && started_rows + rows > chunk) return;  // at the next step
        DecodeRequest r;
        r.id = id;
        r.prompt = spec.prompt;
        r.max_tokens = spec.max_tokens;
        r.sampling = SamplingOptions{1.0f, 0, 1.0f, 0.0f};  // the processor applies T and top_p
        r.seed = spec.seed;
        bool admitted = false;
        try {
          admitted = decoder_->admit(std::move(r));
        } catch (const std::exception& e) {
          fail_job(job, e.what());  // never runnable (larger than the KV pool): the others go on
          break;
        }
        if (!admitted) return;  // KV blocks: wait for evictions
        started_rows += rows;
      }
      if (spec.score_prompt) {
        try {
          if (!scorer_) scorer_ = std::make_unique<Generator>(model_, 1, context_);
          // Over the tokenizer's ids, as the sampled tokens' (a padded model vocabulary's
          // padding has no text).
          for (const TokenLogprobs& lp :
               scorer_->score(spec.prompt, std::max(spec.logprobs, 0), tok_.vocab_size()))
            result.prompt_tokens.push_back(token_info(lp));
        } catch (const std::exception& e) {
          if (decode) decoder_->finish(id);
          fail_job(job, e.what());
          break;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.prompt_tokens += int64_t(spec.prompt.size());
        if (decode) stats_.sequences++;
      }
      if (!decode) {
        result.finish_reason = "length";
        if (job->on_delta) job->on_delta({int(next_choice_), "", {}, "length"});
        job->finish_choice();
        continue;
      }
      EngineSequence& s = seqs_[size_t(id)];
      s = EngineSequence{};
      s.job = job;
      s.choice = int(next_choice_);
      s.spec = &spec;
    }
    next_choice_ = 0;
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
    stats_.queue_depth = int64_t(queue_.size());
  }
}

void Engine::drop_cancelled() {
  for (size_t i = 0; i < seqs_.size(); i++) {
    EngineSequence& s = seqs_[i];
    if (!s.job) continue;
    const bool failed = !s.job->error().empty();
    if (!failed && !s.job->cancelled()) continue;
    decoder_->finish(int(i));
    if (!failed) end_choice(s, tok_.decode(s.ids, /*skip_special=*/true), "stop");
    s = EngineSequence{};
  }
}

void Engine::step() {
  // New sequences whose prompt is (all but) in get their first token in a step of their own
  // before the others' next one: their time to first token is then the step in flight plus their
  // prompt, not plus everyone's next token as well. At most one such step between full ones, so
  // a stream of arrivals cannot starve the sequences already decoding.
  const int due = last_step_first_tokens_ ? 0 : decoder_->first_tokens_due();
  const bool first_only = due > 0 && due < decoder_->live();
  last_step_first_tokens_ = first_only;
  const std::vector<DecodedToken>& tokens = decoder_->step(
      processor_.get(), first_only ? BatchDecoder::Rows::kFirstTokens : BatchDecoder::Rows::kAll);
  {
    // Counted before the tokens go out: a client that got its last token sees its step counted.
    std::lock_guard<std::mutex> lock(mu_);
    stats_.passes++;
    stats_.generated_tokens += int64_t(tokens.size());
  }
  for (const DecodedToken& d : tokens) {
    EngineSequence& s = seqs_[size_t(d.id)];
    if (on_token(s, d.token, d.at_limit)) {
      decoder_->finish(d.id);
      s = EngineSequence{};
    }
  }
}

void Engine::end_choice(EngineSequence& s, std::string text, const std::string& finish) {
  ChoiceResult& result = s.job->results_[size_t(s.choice)];
  if (s.job->on_delta) {
    StreamDelta d;
    d.choice = s.choice;
    if (text.size() > s.sent_text) d.text = text.substr(s.sent_text);
    d.tokens.assign(result.tokens.begin() + long(s.sent_tokens), result.tokens.end());
    d.finish_reason = finish;
    s.job->on_delta(d);
  }
  result.text = std::move(text);
  result.finish_reason = finish;
  s.job->finish_choice();
}

bool Engine::on_token(EngineSequence& s, int32_t id, bool at_limit) {
  const int V = model_.config().vocab_size;
  const ChoiceSpec& spec = *s.spec;
  ChoiceResult& result = s.job->results_[size_t(s.choice)];
  const std::optional<int32_t> eos = tok_.eos_id();
  s.ids.push_back(id);
  if (spec.logprobs >= 0 && int(s.raw.size()) == V)
    result.tokens.push_back(token_info(s.raw.data(), V, spec.logprobs, id));
  else
    result.tokens.push_back(TokenInfo{id, 0.0f, {}});
  std::string finish;
  if (eos && id == *eos)
    finish = "stop";
  else if (at_limit)
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
  if (!finish.empty()) {
    end_choice(s, std::move(text), finish);
    return true;
  }
  if (streaming) {
    // Text becomes final when it is complete UTF-8 and cannot be the start of a stop string.
    size_t upto = complete_utf8_prefix(text);
    upto -= stop_prefix_hold(text.substr(0, upto), spec.stop);
    if (upto > s.sent_text) {
      StreamDelta d;
      d.choice = s.choice;
      d.text = text.substr(s.sent_text, upto - s.sent_text);
      d.tokens.assign(result.tokens.begin() + long(s.sent_tokens), result.tokens.end());
      s.sent_text = upto;
      s.sent_tokens = result.tokens.size();
      s.job->on_delta(d);
    }
  }
  return false;
}

void Engine::fail_job(const std::shared_ptr<EngineJob>& job, const std::string& error) {
  job->fail(error);
  for (size_t i = 0; i < seqs_.size(); i++)
    if (seqs_[i].job == job) {
      decoder_->finish(int(i));
      seqs_[i] = EngineSequence{};
    }
}

void Engine::fail_live(const std::string& error) {
  for (EngineSequence& s : seqs_)
    if (s.job) s.job->fail(error);
  decoder_->clear();
  for (EngineSequence& s : seqs_) s = EngineSequence{};
  // The queue's front job may be partly admitted: it failed with them above when any of its
  // choices was live; its remaining choices are skipped at admission.
}

}  // namespace distill::serve
