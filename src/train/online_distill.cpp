// Online distillation: random windows of a text corpus scored as training goes by a frozen
// teacher in process (dense logits, hidden states) or by an endpoint (top-k log-probabilities),
// optionally on the student's own samples (on-policy). See train/distill_train.h for the options.
#include <cmath>
#include <optional>

#include "data/text_corpus.h"
#include "distill/hidden_loss.h"
#include "harvest/api_teacher.h"
#include "infer/generator.h"
#include "tokenizer/byte_tokenizer_adapter.h"
#include "tokenizer/tokenizer.h"
#include "train/distill_task.h"

namespace distill {
namespace {

// The tokenizer the text of online distillation is read with: the teacher's tokenizer files,
// or bytes (null) for a teacher without any (the byte-level models of `distill pretrain`).
std::unique_ptr<Tokenizer> teacher_text_tokenizer(const std::string& teacher) {
  if (teacher.empty() || model_tokenizer_files(teacher).empty()) return nullptr;
  return load_tokenizer(teacher);
}

// With an endpoint teacher the text is read in the student's tokens: --init-from's tokenizer
// files, or bytes (null).
std::unique_ptr<Tokenizer> endpoint_text_tokenizer(const DistillTrainOptions& o) {
  if (o.init_from.empty() || model_tokenizer_files(o.init_from).empty()) return nullptr;
  return load_tokenizer(o.init_from);
}

// Online distillation on random windows of a text corpus (in the teacher's tokens): the frozen
// teacher's dense logits for every micro-batch, or an endpoint's top-k log-probabilities.
class OnlineDistillTask final : public DistillTaskBase {
 public:
  explicit OnlineDistillTask(const DistillTrainOptions& o)
      : DistillTaskBase(o),
        tokenizer_(o.teacher_endpoint.empty() ? teacher_text_tokenizer(o.teacher)
                                              : endpoint_text_tokenizer(o)),
        corpus_(TextCorpus::load(o.data, o.val_fraction, o.loop.seq_len + 1, tokenizer_.get())) {
    if (!o.teacher_endpoint.empty()) {
      if (teacher_)
        throw Error("give the teacher as --teacher (a model directory) or --teacher-endpoint, "
                    "not both");
      if (!o.hidden_loss.empty() || !o.attention_loss.empty())
        throw Error("--hidden-loss and --attention-loss need the teacher's weights (--teacher): "
                    "an endpoint returns log-probabilities only");
      if (!tokenizer_) byte_tokenizer_ = std::make_unique<ByteLevelTokenizer>();
      harvest::ApiTeacherOptions a;
      a.endpoint = o.teacher_endpoint;
      a.model = o.teacher_model;
      a.api_key_env = o.teacher_api_key_env;
      a.top_logprobs = o.teacher_top_logprobs;
      a.concurrency = o.teacher_concurrency;
      api_ = std::make_unique<harvest::ApiTeacher>(a, text_tokenizer());
    } else if (!teacher_) {
      throw Error("online distillation needs --teacher (a model directory) or --teacher-endpoint");
    }
    if (!(o.on_policy_fraction >= 0.0f && o.on_policy_fraction <= 1.0f))
      throw Error("--on-policy-fraction {}: expected a probability in [0, 1]",
                  o.on_policy_fraction);
    if (o.on_policy_fraction > 0.0f && prompt_tokens() >= o.loop.seq_len)
      throw Error("--prompt-tokens {} leaves nothing to complete in --seq-len {}",
                  prompt_tokens(), o.loop.seq_len);
    if (!(o.sample_temperature > 0.0f))
      throw Error("--sample-temperature {}: expected > 0", o.sample_temperature);
    if (!o.hidden_loss.empty()) hidden_kind_ = parse_hidden_loss(o.hidden_loss);
    if (!(o.hidden_weight >= 0.0f))
      throw Error("--hidden-weight {}: expected >= 0", o.hidden_weight);
    if (!o.attention_loss.empty() && o.attention_loss != "kl")
      throw Error("--attention-loss '{}': expected kl", o.attention_loss);
    if (!(o.attention_weight >= 0.0f))
      throw Error("--attention-weight {}: expected >= 0", o.attention_weight);
    // The teacher never runs backward: its forward need not keep every layer's activations.
    if (teacher_) teacher_->set_checkpointing(true);
  }

  TaskMemory memory() const override {
    const auto [b0, b1] = dist::share(o_.loop.batch_size);  // this rank's rows
    if (!teacher_) return {};  // an endpoint teacher: top-k rows only
    const ModelConfig& t = teacher_->config();
    const int B = int(b1 - b0), T = o_.loop.seq_len, A = o_.loop.grad_accum;
    const size_t BT = size_t(B) * T;
    TaskMemory m;
    m.teacher_weights = model_arena_bytes(t, /*trainable=*/false);  // load_model_dir's
    if (needs_teacher())
      m.teacher_activations = int64_t(
          FloatBuffer::allocation_bytes(training_buffer_floats(t, B, T, true)));
    m.dlogits = int64_t(sizeof(float) * BT * size_t(t.vocab_size));
    const size_t global = size_t(o_.loop.batch_size) * T;  // every rank draws the whole batch
    m.data = int64_t(sizeof(int32_t) * (corpus_.train_tokens() + corpus_.val_tokens() +
                                        2 * global * A) + sizeof(float) * global);
    return m;
  }

  ModelConfig model_config() override {
    if (api_)
      return student_config(text_tokenizer().fingerprint(), text_tokenizer().vocab_size(),
                            "the tokenizer of the endpoint teacher " + o_.teacher_endpoint);
    return student_config(model_tokenizer_fingerprint(o_.teacher), teacher_->config().vocab_size,
                          "the teacher " + o_.teacher);
  }

  StepResult step(Model& model, Rng& rng) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, A = o_.loop.grad_accum;
    const int V = model.config().vocab_size, N = B * T;
    const size_t BT = size_t(N);
    ids_.resize(BT * A);
    targets_.resize(BT * A);
    weights_.assign(BT * A, 1.0f);
    // Every rank draws the same windows, policies and seeds: the draws do not depend on rank.
    std::vector<uint8_t> on_policy(A, 0);
    std::vector<uint64_t> seeds(size_t(B) * A, 0);
    for (int a = 0; a < A; a++) {
      corpus_.sample_train(rng, B, T, ids_.data() + a * BT, targets_.data() + a * BT);
      if (o_.on_policy_fraction > 0.0f) {
        on_policy[a] = rng.uniform() < double(o_.on_policy_fraction);
        if (on_policy[a])
          for (int b = 0; b < B; b++) seeds[size_t(a) * B + b] = rng.next();
      }
    }
    // Under MPI each rank runs its share of every micro-batch's rows.
    const auto [b0, b1] = dist::share(B);
    const int nb = int(b1 - b0), n = nb * T;
    nlohmann::json sample;
    int on_policy_batches = 0;
    for (int a = 0; a < A; a++) {
      if (!on_policy[a]) continue;
      on_policy_batches++;
      if (nb > 0) complete_on_policy(model, a, b0, b1, seeds.data() + size_t(a) * B,
                                     sample.is_null() && b0 == 0 ? &sample : nullptr);
    }
    if (api_) {
      // The endpoint scores this rank's rows of every micro-batch (on-policy rows: the loss
      // stays on the completion).
      rows_.assign(BT * A, SparseTeacherRow{nullptr, nullptr, 0, 0.0f});
      scored_.assign(A, {});
      for (int a = 0; a < A && nb > 0; a++) {
        const size_t at = a * BT + size_t(b0) * T;
        scored_[a] = score_rows(ids_.data() + at, targets_.data() + at, rows_.data() + at, nb);
      }
    }
    // The loss is a mean over the step's target positions on all ranks.
    double normalizer = 0.0;
    for (int a = 0; a < A; a++)
      for (size_t i = a * BT + size_t(b0) * T; i < a * BT + size_t(b1) * T; i++)
        normalizer += weights_[i];
    dist::allreduce_sum(&normalizer, 1);
    dlogits_.resize(size_t(n) * V);
    KdLossResult total;
    double hidden = 0.0, attention = 0.0;
    for (auto& g : proj_grad_) std::fill(g.begin(), g.end(), 0.0f);
    for (int a = 0; a < A && nb > 0; a++) {
      const size_t at = a * BT + size_t(b0) * T;
      const int32_t* ids = ids_.data() + at;
      // Cross-entropy alone needs no teacher: it is not run (fine-tuning on text).
      const float* teacher_logits =
          needs_teacher() && !api_ ? teacher_->forward(ids, nb, T) : nullptr;
      const float* student_logits = model.forward(ids, nb, T);
      std::fill(dlogits_.begin(), dlogits_.end(), 0.0f);
      if (api_)
        add(total, kd_loss_sparse(spec_, student_logits, rows_.data() + at, targets_.data() + at,
                                  weights_.data() + at, n, V, normalizer, dlogits_.data()));
      else
        add(total, kd_loss_dense(spec_, student_logits, teacher_logits, targets_.data() + at,
                                 weights_.data() + at, n, V, normalizer, dlogits_.data()));
      hidden += hidden_losses(model, weights_.data() + at, n, normalizer, true);
      attention += attention_losses(model, weights_.data() + at, nb, normalizer, true);
      model.backward(dlogits_.data());
    }
    allreduce(total);
    nlohmann::json details = terms(total);
    if (hidden_kind_) {
      dist::allreduce_sum(&hidden, 1);
      total.loss += hidden;
      details["loss_hidden"] = hidden;
      step_projections();
    }
    if (!attention_pairs_.empty()) {
      dist::allreduce_sum(&attention, 1);
      total.loss += attention;
      details["loss_attention"] = attention;
    }
    if (o_.on_policy_fraction > 0.0f) {
      details["on_policy_batches"] = on_policy_batches;
      if (!sample.is_null()) details["sample"] = sample;
    }
    return StepResult{total.loss, int64_t(BT) * A, details};
  }

  float evaluate(Model& model) override {
    const int B = o_.loop.batch_size, T = o_.loop.seq_len, V = model.config().vocab_size;
    const size_t BT = size_t(B) * T;
    std::vector<int32_t> ids(BT), targets(BT);
    std::vector<float> weights(BT, 1.0f);
    const double normalizer = double(BT) * o_.loop.eval_batches;
    const auto [b0, b1] = dist::share(B);
    const int nb = int(b1 - b0);
    const size_t at = size_t(b0) * T;
    // An endpoint scores the held-out windows once; they are the same at every evaluation.
    if (api_ && val_scored_.empty()) {
      val_ids_.resize(o_.loop.eval_batches);
      val_rows_.resize(o_.loop.eval_batches);
      for (int i = 0; i < o_.loop.eval_batches && nb > 0; i++) {
        corpus_.val_batch(i, o_.loop.eval_batches, B, T, ids.data(), targets.data());
        val_rows_[i].assign(size_t(nb) * T, SparseTeacherRow{nullptr, nullptr, 0, 0.0f});
        val_scored_.push_back(
            score_rows(ids.data() + at, targets.data() + at, val_rows_[i].data(), nb));
        val_ids_[i] = {std::vector<int32_t>(ids.begin() + at, ids.begin() + at + size_t(nb) * T),
                       std::vector<int32_t>(targets.begin() + at,
                                            targets.begin() + at + size_t(nb) * T)};
      }
    }
    double loss = 0.0;
    for (int i = 0; i < o_.loop.eval_batches && nb > 0; i++) {
      if (api_) {
        const auto& [vi, vt] = val_ids_[i];
        const float* s = model.forward(vi.data(), nb, T);
        loss += kd_loss_sparse(spec_, s, val_rows_[i].data(), vt.data(), weights.data(), nb * T,
                               V, normalizer, nullptr).loss;
        continue;
      }
      corpus_.val_batch(i, o_.loop.eval_batches, B, T, ids.data(), targets.data());
      // The two models own separate buffers; cross-entropy alone needs no teacher.
      const float* t = needs_teacher() ? teacher_->forward(ids.data() + at, nb, T) : nullptr;
      const float* s = model.forward(ids.data() + at, nb, T);
      loss += kd_loss_dense(spec_, s, t, targets.data() + at, weights.data(), nb * T, V,
                            normalizer, nullptr).loss;
      loss += hidden_losses(model, weights.data(), nb * T, normalizer, false);
      loss += attention_losses(model, weights.data(), nb, normalizer, false);
    }
    dist::allreduce_sum(&loss, 1);
    return float(loss);
  }

  nlohmann::json identity() const override {
    nlohmann::json j = {{"task", "distill-online"}, {"teacher", o_.teacher}, {"data", o_.data},
                        {"loss", spec_.describe()}};
    if (api_)
      j["teacher_endpoint"] = {{"url", o_.teacher_endpoint}, {"model", o_.teacher_model},
                               {"top_logprobs", o_.teacher_top_logprobs}};
    if (o_.on_policy_fraction > 0.0f)
      j["on_policy"] = {{"fraction", o_.on_policy_fraction}, {"prompt_tokens", prompt_tokens()},
                        {"temperature", o_.sample_temperature}};
    if (hidden_kind_)
      j["hidden"] = {{"loss", hidden_loss_name(*hidden_kind_)}, {"weight", o_.hidden_weight},
                     {"layer_map", o_.layer_map}};
    if (!o_.attention_loss.empty())
      j["attention"] = {{"loss", o_.attention_loss}, {"weight", o_.attention_weight},
                        {"layers", o_.attention_layers}};
    return j;
  }

  // Hidden-state distillation: the layer map and, when the widths differ, one learned
  // projection (Ct, Cs) per pair with its Adam moments.
  void attach(const Model& model) override {
    if (!o_.attention_loss.empty()) {
      const int Ls = model.config().num_layers, Lt = teacher_->config().num_layers;
      attention_pairs_ = parse_attention_layers(o_.attention_layers, Ls, Lt);
      datt_.assign(attention_pairs_.size(), {});
      for (const auto& [ls, lt] : attention_pairs_) {
        // Checkpointing keeps only the last layer's attention maps after a forward.
        if (lt + 1 < Lt) teacher_->set_checkpointing(false);
        if (ls + 1 < Ls && o_.loop.checkpoint_activations)
          throw Error("--attention-layers '{}': with --checkpoint-activations only the last "
                      "student layer's attention can be distilled", o_.attention_layers);
      }
    }
    if (!hidden_kind_) return;
    const ModelConfig &s = model.config(), &t = teacher_->config();
    pairs_ = parse_layer_map(o_.layer_map, s.num_layers, t.num_layers);
    Cs_ = s.hidden_size;
    Ct_ = t.hidden_size;
    dh_.assign(pairs_.size(), {});
    if (Cs_ == Ct_) return;
    const size_t n = size_t(Ct_) * Cs_;
    Rng rng(o_.loop.seed ^ 0x9e0b1ec7ull);
    const double std = 1.0 / std::sqrt(double(Cs_));
    proj_.assign(pairs_.size(), std::vector<float>(n));
    for (auto& w : proj_)
      for (float& x : w) x = float(std * rng.normal());
    proj_grad_.assign(pairs_.size(), std::vector<float>(n, 0.0f));
    proj_m_.assign(pairs_.size(), std::vector<float>(n, 0.0f));
    proj_v_.assign(pairs_.size(), std::vector<float>(n, 0.0f));
  }

  std::vector<StateTensor> state_tensors() override {
    std::vector<StateTensor> out;
    for (size_t k = 0; k < proj_.size(); k++) {
      const std::string p = "hidden_projection." + std::to_string(k) + ".";
      out.push_back({p + "weight", proj_[k].data(), proj_[k].size()});
      out.push_back({p + "exp_avg", proj_m_[k].data(), proj_m_[k].size()});
      out.push_back({p + "exp_avg_sq", proj_v_[k].data(), proj_v_[k].size()});
    }
    if (!proj_.empty()) out.push_back({"hidden_projection.steps", &proj_steps_, 1});
    return out;
  }

 private:
  int prompt_tokens() const {
    return o_.prompt_tokens > 0 ? o_.prompt_tokens : std::max(1, o_.loop.seq_len / 2);
  }
  bool needs_teacher() const {
    return spec_.needs_teacher() || hidden_kind_.has_value() || !o_.attention_loss.empty();
  }

  // The attention-map term of the micro-batch the student and teacher just ran forward (rows
  // of T positions); with `backward`, registers its gradients with the student.
  double attention_losses(Model& model, const float* weights, int rows, double normalizer,
                          bool backward) {
    if (attention_pairs_.empty()) return 0.0;
    const int T = o_.loop.seq_len, NHs = model.config().num_heads;
    const int NHt = teacher_->config().num_heads;
    const double scale = double(o_.attention_weight) / double(attention_pairs_.size());
    double loss = 0.0;
    for (size_t k = 0; k < attention_pairs_.size(); k++) {
      const auto [ls, lt] = attention_pairs_[k];
      if (backward) datt_[k].assign(size_t(rows) * NHs * T * T, 0.0f);
      loss += attention_map_loss(model.layer_activations(ls).attention, NHs,
                                 teacher_->layer_activations(lt).attention, NHt, weights, rows, T,
                                 normalizer, scale, backward ? datt_[k].data() : nullptr);
      if (backward) model.add_attention_grad(ls, datt_[k].data());
    }
    return loss;
  }
  const Tokenizer& text_tokenizer() const {
    return tokenizer_ ? *tokenizer_ : *byte_tokenizer_;
  }

  // Endpoint teacher: `rows` rows of T positions (each the sequence ids[0] followed by the
  // targets while >= 0) are scored and `teacher` points at their top-k rows. Returns the scored
  // sequences those rows point into.
  std::vector<harvest::ScoredText> score_rows(const int32_t* ids, const int32_t* targets,
                                              SparseTeacherRow* teacher, int rows) {
    const int T = o_.loop.seq_len;
    std::vector<std::vector<int32_t>> seqs(rows);
    for (int r = 0; r < rows; r++) {
      seqs[r].push_back(ids[size_t(r) * T]);
      for (int t = 0; t < T && targets[size_t(r) * T + t] >= 0; t++)
        seqs[r].push_back(targets[size_t(r) * T + t]);
    }
    std::vector<harvest::ScoredText> scored = api_->score(seqs);
    for (int r = 0; r < rows; r++) {
      const harvest::ScoredText& s = scored[r];
      const int n = int(seqs[r].size());
      for (int t = 0; t < T; t++)
        teacher[size_t(r) * T + t] =
            t + 1 < n ? SparseTeacherRow{s.top_ids.data() + size_t(t + 1) * s.k,
                                         s.top_logprobs.data() + size_t(t + 1) * s.k,
                                         s.counts[t + 1], s.tail[t + 1]}
                      : SparseTeacherRow{nullptr, nullptr, 0, 0.0f};
    }
    return scored;
  }

  // The hidden-state term of the micro-batch the student and teacher just ran forward (n rows);
  // with `backward`, registers its gradients with the student (Model::add_hidden_grad) and
  // accumulates the projections'.
  double hidden_losses(Model& model, const float* weights, int n, double normalizer,
                       bool backward) {
    if (!hidden_kind_) return 0.0;
    const double scale = double(o_.hidden_weight) / double(pairs_.size());
    double loss = 0.0;
    for (size_t k = 0; k < pairs_.size(); k++) {
      const auto [i, j] = pairs_[k];
      if (backward) dh_[k].assign(size_t(n) * Cs_, 0.0f);
      loss += hidden_state_loss(*hidden_kind_, model.hidden(i),
                                proj_.empty() ? nullptr : proj_[k].data(), teacher_->hidden(j),
                                weights, n, Cs_, Ct_, normalizer, scale,
                                backward ? dh_[k].data() : nullptr,
                                backward && !proj_.empty() ? proj_grad_[k].data() : nullptr);
      if (backward) model.add_hidden_grad(i, dh_[k].data());
    }
    return loss;
  }

  // One Adam step (no decay, constant --lr) of the projections on the step's summed gradient.
  void step_projections() {
    if (proj_.empty()) return;
    proj_steps_ += 1.0f;
    const double b1 = 0.9, b2 = 0.999, lr = o_.loop.lr;
    const double c1 = 1.0 - std::pow(b1, proj_steps_), c2 = 1.0 - std::pow(b2, proj_steps_);
    for (size_t k = 0; k < proj_.size(); k++) {
      std::vector<float>& g = proj_grad_[k];
      dist::allreduce_sum(g.data(), g.size());
      for (size_t e = 0; e < g.size(); e++) {
        proj_m_[k][e] = float(b1 * proj_m_[k][e] + (1.0 - b1) * g[e]);
        proj_v_[k][e] = float(b2 * proj_v_[k][e] + (1.0 - b2) * double(g[e]) * g[e]);
        proj_[k][e] -= float(lr * (proj_m_[k][e] / c1) / (std::sqrt(proj_v_[k][e] / c2) + 1e-8));
      }
    }
  }

  // Micro-batch a, rows [b0, b1): the student completes each window's first P tokens by
  // sampling (row b with seeds[b]) to a sequence of up to T + 1 tokens; ids, targets and weights
  // become that sequence's, with weight 1 on the completion's tokens only. `sample`, when given,
  // receives row b0's prompt and completion (logged with the step).
  void complete_on_policy(Model& model, int a, int64_t b0, int64_t b1, const uint64_t* seeds,
                          nlohmann::json* sample) {
    const int T = o_.loop.seq_len, P = prompt_tokens();
    const size_t BT = size_t(o_.loop.batch_size) * T;
    const int rows = int(b1 - b0);
    if (!generator_ || generator_rows_ != rows) {
      generator_ = std::make_unique<Generator>(model, rows, T + 1);
      generator_rows_ = rows;
    }
    std::vector<std::vector<int32_t>> prompts(rows);
    GenerateOptions g;
    g.sampling.temperature = o_.sample_temperature;
    g.sampling.top_p = 1.0f;
    g.max_tokens = T + 1 - P;
    for (int r = 0; r < rows; r++) {
      const int32_t* window = ids_.data() + a * BT + size_t(b0 + r) * T;
      prompts[r].assign(window, window + P);
      g.request_seeds.push_back(seeds[b0 + r]);
    }
    if (tokenizer_) {
      if (auto eos = tokenizer_->eos_id()) g.stop_ids.push_back(*eos);
      g.sampling.vocab_limit = tokenizer_->vocab_size();  // padding ids have no text
    }
    const std::vector<Generation> out = generator_->generate(prompts, g);
    for (int r = 0; r < rows; r++) {
      std::vector<int32_t> seq = prompts[r];
      seq.insert(seq.end(), out[r].tokens.begin(), out[r].tokens.end());
      const size_t row = a * BT + size_t(b0 + r) * T;
      for (int t = 0; t < T; t++) {
        const bool has_next = t + 1 < int(seq.size());
        ids_[row + t] = t < int(seq.size()) ? seq[t] : 0;
        targets_[row + t] = has_next ? seq[t + 1] : -1;
        weights_[row + t] = has_next && t + 1 >= P ? 1.0f : 0.0f;
      }
      if (r == 0 && sample) {
        *sample = {{"seed", seeds[b0]}, {"prompt", prompts[0]}, {"completion", out[0].tokens}};
        (*sample)["text"] = tokenizer_ ? tokenizer_->decode(out[0].tokens)
                                       : std::string(out[0].tokens.begin(), out[0].tokens.end());
      }
    }
  }

  std::unique_ptr<Tokenizer> tokenizer_;  // null: bytes
  TextCorpus corpus_;
  std::vector<int32_t> ids_, targets_;
  std::vector<float> weights_, dlogits_;
  std::unique_ptr<Tokenizer> byte_tokenizer_;  // an endpoint teacher's text tokenizer for bytes
  std::unique_ptr<harvest::ApiTeacher> api_;   // an endpoint teacher (else teacher_)
  std::vector<SparseTeacherRow> rows_;         // endpoint: the step's top-k teacher rows
  std::vector<std::vector<harvest::ScoredText>> scored_;  // what rows_ point into
  std::vector<std::vector<harvest::ScoredText>> val_scored_;
  std::vector<std::vector<SparseTeacherRow>> val_rows_;
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> val_ids_;  // ids, targets
  std::unique_ptr<Generator> generator_;  // the student's, for on-policy completions
  int generator_rows_ = 0;
  std::optional<HiddenLossKind> hidden_kind_;
  std::vector<std::pair<int, int>> pairs_;  // student : teacher boundaries
  int Cs_ = 0, Ct_ = 0;
  std::vector<std::vector<float>> dh_;      // per pair (n, Cs): the student's hidden gradients
  std::vector<std::vector<float>> proj_, proj_grad_, proj_m_, proj_v_;  // per pair (Ct, Cs)
  float proj_steps_ = 0.0f;
  std::vector<std::pair<int, int>> attention_pairs_;  // student : teacher layers
  std::vector<std::vector<float>> datt_;              // per pair (rows, NHs, T, T)
};

}  // namespace

std::unique_ptr<TrainTask> make_online_distill_task(const DistillTrainOptions& options) {
  return std::make_unique<OnlineDistillTask>(options);
}

}  // namespace distill
