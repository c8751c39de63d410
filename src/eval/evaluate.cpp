#include "eval/evaluate.h"

#include <omp.h>

#include <ctime>
#include <filesystem>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "formats/model_dir.h"
#include "formats/safetensors.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill {
namespace fs = std::filesystem;

std::pair<std::string, std::string> split_name_value(const std::string& text,
                                                     const std::string& flag) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    throw Error("{} '{}': expected NAME=PATH", flag, text);
  return {text.substr(0, eq), text.substr(eq + 1)};
}

std::vector<EvalModelSpec> eval_model_list(const std::string& teacher, const std::string& student,
                                           const std::vector<std::string>& baselines,
                                           const std::vector<std::string>& named) {
  if (teacher.empty())
    throw Error("--teacher is required (the model the others are compared with)");
  std::vector<EvalModelSpec> models = {{"teacher", "teacher", teacher}};
  if (!student.empty()) models.push_back({"student", "student", student});
  for (size_t i = 0; i < baselines.size(); i++)
    models.push_back({baselines.size() == 1 ? "baseline" : fmt::format("baseline-{}", i + 1),
                      "baseline", baselines[i]});
  for (const std::string& m : named) {
    auto [name, dir] = split_name_value(m, "--model");
    models.push_back({name, "model", dir});
  }
  std::set<std::string> seen;
  for (const EvalModelSpec& m : models)
    if (!seen.insert(m.name).second)
      throw Error("two models are named '{}': names must be unique", m.name);
  return models;
}

std::string read_held_out_text(const EvalOptions& o, bool bytes) {
  std::string text;
  if (!o.held_out_files.empty()) {
    for (const std::string& f : o.held_out_files) text += read_file_text(f);
    return text;
  }
  if (o.text_files.empty())
    throw Error(
        "no held-out text: give --text FILE (its last --val-fraction is held out) or "
        "--held-out FILE");
  if (!(o.val_fraction > 0.0 && o.val_fraction < 1.0))
    throw Error("--val-fraction must be in (0, 1), found {}", o.val_fraction);
  for (const std::string& f : o.text_files) {
    const std::string all = read_file_text(f);
    // The same split as TextCorpus::load: the last size * val_fraction bytes (moved to a UTF-8
    // boundary for non-byte tokenizers).
    size_t start = all.size() - size_t(double(all.size()) * o.val_fraction);
    if (!bytes)
      while (start < all.size() && (static_cast<unsigned char>(all[start]) & 0xC0) == 0x80) start++;
    text.append(all, start, std::string::npos);
  }
  return text;
}

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct LoadedSpec {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
};

}  // namespace

EvalReport run_eval(const EvalOptions& o, const EvalProgressFn& progress) {
  auto emit = [&](const std::string& phase, const std::string& model, int64_t done, int64_t total,
                  const std::string& message = "") {
    if (progress) progress(EvalProgress{phase, model, done, total, message});
  };
  // Everything that can fail fast is checked before the first slow step.
  int teacher = -1;
  for (size_t i = 0; i < o.models.size(); i++)
    if (o.models[i].role == "teacher") {
      if (teacher >= 0) throw Error("more than one teacher");
      teacher = int(i);
    }
  if (teacher < 0) throw Error("no teacher: --teacher is required");
  if (o.seq_len < 1) throw Error("--seq-len must be positive, found {}", o.seq_len);
  if (o.batch < 1) throw Error("held-out batch must be positive, found {}", o.batch);
  std::vector<LoadedSpec> specs;
  for (const EvalModelSpec& m : o.models) {
    if (!fs::is_directory(m.dir))
      throw Error("{} '{}': {} is not a model directory", m.role, m.name, m.dir);
    LoadedSpec s;
    s.config = ModelConfig::from_file(m.dir + "/config.json");
    s.tokenizer = load_model_tokenizer(m.dir);
    specs.push_back(std::move(s));
  }
  const EvalModelSpec& tm = o.models[teacher];
  const Tokenizer& tok = *specs[teacher].tokenizer;
  const int V = specs[teacher].config.vocab_size;
  for (size_t i = 0; i < o.models.size(); i++) {
    const EvalModelSpec& m = o.models[i];
    const LoadedSpec& s = specs[i];
    if (s.config.vocab_size != V)
      throw Error(
          "model '{}' ({}) has a vocabulary of {} tokens, the teacher ({}) {}: every "
          "model must share the teacher's vocabulary",
          m.name, m.dir, s.config.vocab_size, tm.dir, V);
    if (s.tokenizer->fingerprint() != tok.fingerprint())
      throw Error(
          "model '{}' ({}) uses tokenizer {} ({}), the teacher ({}) {} ({}): every model "
          "must share the teacher's tokenizer",
          m.name, m.dir, s.tokenizer->fingerprint(), s.tokenizer->kind(), tm.dir, tok.fingerprint(),
          tok.kind());
    if (s.tokenizer->vocab_size() > s.config.vocab_size)
      throw Error(
          "model '{}' ({}): its tokenizer has {} tokens, more than the model's "
          "vocabulary of {}",
          m.name, m.dir, s.tokenizer->vocab_size(), s.config.vocab_size);
    if (o.seq_len > s.config.max_position)
      throw Error("--seq-len {} exceeds the context of model '{}' ({}): {} positions", o.seq_len,
                  m.name, m.dir, s.config.max_position);
  }
  EvalReport r;
  r.created = utc_now();
  r.seq_len = o.seq_len;
  r.max_windows = o.max_windows;
  r.max_new_tokens = o.max_new_tokens;
  r.threads = omp_get_max_threads();
  r.tokenizer_kind = tok.kind();
  r.tokenizer_fingerprint = tok.fingerprint();
  r.vocab_size = V;
  r.task_file = o.task_file;
  if (!o.task_file.empty()) r.task_examples = load_task_file(o.task_file);
  for (const auto& [name, dir] : o.runs) r.runs.push_back(load_run_curve(name, dir));
  r.text_files = o.held_out_files.empty() ? o.text_files : o.held_out_files;
  r.held_out_rule = o.held_out_files.empty()
                        ? fmt::format("last {:g}% of each file", o.val_fraction * 100)
                        : "whole files";
  const std::vector<int32_t> tokens = tok.encode(read_held_out_text(o, tok.kind() == "bytes"));
  r.held_out_tokens = int64_t(tokens.size());
  const HeldOutWindows windows = make_held_out_windows(tokens, o.seq_len, o.max_windows);
  emit("note", "", 0, 0,
       fmt::format("held-out text: {} tokens, {} windows of {}", tokens.size(), windows.count,
                   o.seq_len));

  const int n = int(o.models.size());
  r.models.resize(n);
  for (int i = 0; i < n; i++) {
    ModelReport& m = r.models[i];
    const ModelConfig& c = specs[i].config;
    m.name = o.models[i].name;
    m.role = o.models[i].role;
    m.dir = o.models[i].dir;
    m.model_type = c.model_type;
    m.weights = weight_type_name(o.models[i].weights);
    m.layers = c.num_layers;
    m.hidden_size = c.hidden_size;
    m.vocab_size = c.vocab_size;
    m.checkpoint = describe_checkpoint(SafetensorsModel::open(o.models[i].dir).metadata());
  }

  // Cost first, one model at a time and before the others are loaded, so that each model's
  // memory peak is its own.
  for (int i = 0; i < n; i++) {
    emit("cost", r.models[i].name, i, n);
    if (o.measure_cost) {
      r.models[i].cost = measure_cost(o.models[i].dir, tokens, o.cost, o.models[i].weights);
    } else {
      CostMetrics& c = r.models[i].cost;
      c.parameters = specs[i].config.num_parameters();
      c.weights_memory_bytes = c.parameters * int64_t(sizeof(float));
      c.weights_file_bytes = weights_file_bytes(o.models[i].dir);
      c.threads = r.threads;
      c.memory_method = "not measured";
    }
  }
  emit("cost", "", n, n);

  // Held-out quality: each batch of windows goes through the teacher once, then through every
  // other model, all compared with the teacher's logits of that batch.
  std::vector<std::unique_ptr<Model>> models;
  for (int i = 0; i < n; i++) {
    models.push_back(load_model_dir(o.models[i].dir));
    models.back()->set_weight_type(o.models[i].weights);
  }
  std::vector<QualityAccumulator> acc(n);
  const int T = o.seq_len;
  const int64_t W = windows.count;
  std::vector<int32_t> ids, targets;
  for (int64_t w0 = 0; w0 < W; w0 += o.batch) {
    const int B = int(std::min<int64_t>(o.batch, W - w0));
    ids.resize(size_t(B) * T);
    targets.resize(size_t(B) * T);
    for (int b = 0; b < B; b++) {
      const int32_t* win = windows.window(w0 + b);
      std::copy(win, win + T, ids.begin() + size_t(b) * T);
      std::copy(win + 1, win + T + 1, targets.begin() + size_t(b) * T);
    }
    const float* teacher_logits = models[teacher]->forward(ids.data(), B, T);
    for (int i = 0; i < n; i++) {
      const float* logits = i == teacher ? teacher_logits : models[i]->forward(ids.data(), B, T);
      acc[i].add(logits, teacher_logits, targets.data(), B * T, V);
      acc[i].add_windows(B);
    }
    emit("held-out", "", (w0 + B) * n, W * n);
  }
  for (int i = 0; i < n; i++) r.models[i].quality = acc[i].result();

  if (!r.task_examples.empty()) {
    for (int i = 0; i < n; i++) {
      TaskRunOptions t;
      t.max_new_tokens = o.max_new_tokens;
      t.source = o.task_file;
      t.model_name = r.models[i].name;
      const int64_t total = int64_t(r.task_examples.size());
      emit("task", r.models[i].name, 0, total);
      r.models[i].task = run_task_suite(*models[i], tok, r.task_examples, t, [&](int done, int) {
        emit("task", r.models[i].name, done, total);
      });
    }
  }
  return r;
}

}  // namespace distill
