#include "distill/teacher_data.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/dist.h"
#include "core/error.h"
#include "data/dataset.h"
#include "formats/model_dir.h"
#include "forensics/watermark.h"
#include "infer/generator.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/byte_tokenizer_adapter.h"

namespace distill {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// One unit of teacher work: a record to write unless (id, sample) is already in the dataset.
struct WorkItem {
  std::string id;
  int64_t sample = 0;
  std::string prompt;              // generate: the rendered prompt text
  std::vector<int32_t> tokens;     // generate: prompt ids; score: the text's ids
  std::string source;
  nlohmann::json extra = nlohmann::json::object();
};

// A stable hash (std::hash is not specified across standard libraries).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Calls fn(line_number, json) for every non-empty line of a JSONL file; errors name the line.
template <typename Fn>
void for_jsonl(const std::string& path, Fn&& fn) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot open: {}", path, std::strerror(errno));
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    number++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("{} line {}: not valid JSON: {}", path, number, e.what());
    }
    if (!j.is_object()) throw Error("{} line {}: expected a JSON object", path, number);
    fn(number, j);
  }
}

DatasetHeader make_header(const std::string& teacher, const Tokenizer& tok, int k,
                          const std::string& encoding, nlohmann::json sampling) {
  DatasetHeader h;
  h.tokenizer_fingerprint = tok.fingerprint();
  h.vocab_size = tok.vocab_size();
  h.k = k;
  h.encoding = logprob_encoding_from_name(encoding);
  h.teacher = fs::path(teacher).lexically_normal().string();
  h.sampling = std::move(sampling);
  return h;
}

void append_rows(TopkRows& rows, const TokenLogprobs& lp) {
  rows.append(lp.top_ids.data(), lp.top_logprobs.data(), int(lp.top_ids.size()), lp.tail_mass);
}

class Meter {
 public:
  Meter(const TeacherDataProgressFn& fn, int64_t total, int64_t skipped)
      : fn_(fn), total_(total), skipped_(skipped), t0_(Clock::now()) {}
  void record(int64_t done, int64_t tokens) {
    tokens_ += tokens;
    TeacherDataProgress p;
    p.done = done;
    p.total = total_;
    p.skipped = skipped_;
    p.tokens = tokens_;
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    p.tokens_per_s = s > 0 ? double(tokens_) / s : 0.0;
    const int64_t run_done = done - skipped_;
    p.eta_s = run_done > 0 ? s / double(run_done) * double(total_ - done) : 0.0;
    fn_(p);
  }
  void note(const std::string& text) {
    TeacherDataProgress p;
    p.total = total_;
    p.skipped = skipped_;
    p.done = skipped_;
    p.note = text;
    fn_(p);
  }

 private:
  const TeacherDataProgressFn& fn_;
  int64_t total_, skipped_, tokens_ = 0;
  Clock::time_point t0_;
};

std::string resume_note(const DatasetWriter& w) {
  const DatasetResume& r = w.resumed();
  std::string s = fmt::format("resuming: {} records kept", r.records);
  if (r.dropped_partial_line) s += ", a partial records.jsonl line dropped";
  if (r.dropped_shard_bytes) s += fmt::format(", {} shard bytes past the last record cut", r.dropped_shard_bytes);
  return s;
}

// Teacher outputs travel from the ranks to rank 0, which writes every record (core/dist.h): a
// plain byte encoding (every rank runs the same binary on the same machine type).
class Packer {
 public:
  template <typename T>
  void put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void put(const std::vector<T>& v) {
    put(uint64_t(v.size()));
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void put(const std::string& v) {
    put(uint64_t(v.size()));
    out_ += v;
  }
  void put(const Generation& g) {
    put(g.tokens);
    put(g.finish_reason);
    put(uint64_t(g.logprobs.size()));
    for (const TokenLogprobs& lp : g.logprobs) {
      put(lp.id);
      put(lp.logprob);
      put(lp.top_ids);
      put(lp.top_logprobs);
      put(lp.tail_mass);
    }
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

class Unpacker {
 public:
  explicit Unpacker(const std::string& bytes) : in_(bytes) {}
  template <typename T>
  void get(T& v) {
    take(&v, sizeof(T));
  }
  template <typename T>
  void get(std::vector<T>& v) {
    uint64_t n = 0;
    get(n);
    v.resize(size_t(n));
    take(v.data(), v.size() * sizeof(T));
  }
  void get(std::string& v) {
    uint64_t n = 0;
    get(n);
    v.resize(size_t(n));
    take(v.data(), v.size());
  }
  Generation generation() {
    Generation g;
    get(g.tokens);
    get(g.finish_reason);
    uint64_t n = 0;
    get(n);
    g.logprobs.resize(size_t(n));
    for (TokenLogprobs& lp : g.logprobs) {
      get(lp.id);
      get(lp.logprob);
      get(lp.top_ids);
      get(lp.top_logprobs);
      get(lp.tail_mass);
    }
    return g;
  }

 private:
  void take(void* dst, size_t n) {
    DISTILL_CHECK(at_ + n <= in_.size());
    std::memcpy(dst, in_.data() + at_, n);
    at_ += n;
  }
  const std::string& in_;
  size_t at_ = 0;
};

// The items still to do: rank 0 knows (it opened the dataset, resumed or not) and tells the
// others.
std::vector<int64_t> share_todo(const std::optional<DatasetWriter>& writer,
                                const std::vector<WorkItem>& items) {
  std::vector<int64_t> todo;
  if (writer)
    for (size_t i = 0; i < items.size(); i++)
      if (!writer->completed(items[i].id, items[i].sample)) todo.push_back(int64_t(i));
  dist::broadcast(todo);
  return todo;
}

}  // namespace

std::vector<PromptLine> read_prompt_file(const std::string& path) {
  std::vector<PromptLine> out;
  std::set<std::string> ids;
  for_jsonl(path, [&](int64_t line, const nlohmann::json& j) {
    PromptLine p;
    p.line = line;
    if (j.contains("prompt")) {
      if (!j["prompt"].is_string())
        throw Error("{} line {}: \"prompt\" must be a string", path, line);
      p.prompt = j["prompt"].get<std::string>();
    } else if (j.contains("messages")) {
      if (!j["messages"].is_array())
        throw Error("{} line {}: \"messages\" must be an array", path, line);
      for (const auto& m : j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
            !m["role"].is_string() || !m["content"].is_string())
          throw Error("{} line {}: each message needs \"role\" and \"content\" strings", path,
                      line);
        p.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
    } else {
      throw Error("{} line {}: expected \"prompt\" or \"messages\"", path, line);
    }
    p.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                            : "line:" + std::to_string(line);
    if (!ids.insert(p.id).second)
      throw Error("{} line {}: duplicate prompt id '{}'", path, line, p.id);
    out.push_back(std::move(p));
  });
  return out;
}

void score_text(const ScoreOptions& o, const TeacherDataProgressFn& progress) {
  if (o.top_k <= 0) throw Error("--top-k must be positive");
  if (o.seq_len < 2) throw Error("--seq-len must be at least 2");
  auto model = load_model_dir(o.teacher);
  model->set_weight_type(o.weights);
  auto tok = load_model_tokenizer(o.teacher);
  if (tok->vocab_size() > model->config().vocab_size)
    throw Error("{}: tokenizer has {} tokens but the model's vocabulary is {}", o.teacher,
                tok->vocab_size(), model->config().vocab_size);
  const int context = std::min(o.seq_len, model->config().max_position);
  std::vector<WorkItem> items;
  for (const std::string& path : o.text) {
    const std::string base = fs::path(path).filename().string();
    if (path.size() > 6 && path.substr(path.size() - 6) == ".jsonl") {
      for_jsonl(path, [&](int64_t line, const nlohmann::json& j) {
        if (!j.contains("text") || !j["text"].is_string())
          throw Error("{} line {}: expected a \"text\" string", path, line);
        WorkItem w;
        w.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                                : base + ":" + std::to_string(line);
        w.tokens = tok->encode(j["text"].get<std::string>());
        if (int(w.tokens.size()) > context) w.tokens.resize(context);
        w.source = path;
        if (w.tokens.size() >= 2) items.push_back(std::move(w));
      });
      continue;
    }
    // Plain text: the training part (the held-out tail stays unseen by the student) in
    // non-overlapping windows.
    const std::string text = read_text(path);
    const std::vector<int32_t> ids = tok->encode(text);
    const size_t train = ids.size() - size_t(double(ids.size()) * o.val_fraction);
    for (size_t start = 0, n = 0; start + 2 <= train; start += context, n++) {
      WorkItem w;
      w.id = base + "#" + std::to_string(n);
      w.tokens.assign(ids.begin() + start, ids.begin() + std::min(train, start + context));
      w.source = path;
      w.extra["offset_tokens"] = start;
      items.push_back(std::move(w));
    }
  }
  // At most max_records windows, spread evenly over the text (not just its beginning).
  if (o.max_records > 0 && int64_t(items.size()) > o.max_records) {
    std::vector<WorkItem> kept;
    const size_t n = items.size(), m = size_t(o.max_records);
    for (size_t i = 0; i < m; i++) kept.push_back(std::move(items[i * n / m]));
    items = std::move(kept);
  }
  if (items.empty()) throw Error("nothing to score in {}", o.text.empty() ? "(no files)" : o.text[0]);

  // Under mpirun the ranks score items round-robin and rank 0 writes them in order: the dataset
  // is the one a single process writes.
  std::optional<DatasetWriter> writer;
  std::optional<Meter> meter;
  if (dist::is_root()) {
    writer.emplace(DatasetWriter::open(
        o.out, make_header(o.teacher, *tok, o.top_k, o.encoding, {{"mode", "score"}}), o.resume));
    int64_t skipped = 0;
    for (const WorkItem& w : items) skipped += writer->completed(w.id, 0);
    meter.emplace(progress, int64_t(items.size()), skipped);
    if (writer->resumed().records > 0) meter->note(resume_note(*writer));
  }
  const std::vector<int64_t> todo = share_todo(writer, items);
  const size_t ranks = size_t(dist::size());
  Generator gen(*model, 1, context);
  for (size_t begin = 0; begin < todo.size(); begin += ranks) {
    Packer mine;
    if (const size_t i = begin + size_t(dist::rank()); i < todo.size()) {
      Generation g;
      // Over the tokenizer's ids: a padded model vocabulary's padding has no text.
      g.logprobs = gen.score(items[size_t(todo[i])].tokens, o.top_k, tok->vocab_size());
      mine.put(g);
    }
    const std::vector<std::string> parts = dist::gather(mine.bytes());
    for (size_t j = 0; writer && j < ranks && begin + j < todo.size(); j++) {
      const WorkItem& w = items[size_t(todo[begin + j])];
      DatasetRecord r;
      r.id = w.id;
      r.prompt = "";
      r.completion = tok->decode(w.tokens);
      r.source = w.source;
      r.teacher = o.teacher;
      r.tokens = w.tokens;
      r.prompt_tokens = 0;
      r.first_target = 1;
      r.rows.resize(0, o.top_k);
      for (const TokenLogprobs& lp : Unpacker(parts[j]).generation().logprobs)
        append_rows(r.rows, lp);
      r.extra = w.extra;
      writer->append(r);
      meter->record(writer->size(), int64_t(w.tokens.size()));
    }
  }
  if (writer) writer->close();
}

void generate_data(const GenerateDataOptions& o, const TeacherDataProgressFn& progress) {
  if (o.top_k <= 0) throw Error("--top-k must be positive");
  if (o.num_samples <= 0 || o.max_tokens <= 0 || o.batch <= 0)
    throw Error("--num-samples, --max-tokens and --batch must be positive");
  auto model = load_model_dir(o.teacher);
  model->set_weight_type(o.weights);
  auto tok = load_model_tokenizer(o.teacher);
  std::unique_ptr<ChatTemplate> chat;
  std::vector<WorkItem> items;
  int max_prompt = 0;
  for (const PromptLine& pl : read_prompt_file(o.prompts)) {
    std::string prompt;
    if (pl.prompt) {
      prompt = *pl.prompt;
    } else {
      if (!chat) {
        try {
          chat = std::make_unique<ChatTemplate>(ChatTemplate::from_file(o.teacher));
        } catch (const Error& e) {
          throw Error("{} line {}: messages need the teacher's chat template: {}", o.prompts,
                      pl.line, e.what());
        }
      }
      ChatTemplateOptions co;
      co.add_generation_prompt = true;
      prompt = chat->apply(pl.messages, co);
    }
    std::vector<int32_t> ids = tok->encode(prompt, EncodeOptions{true, !pl.prompt});
    if (ids.empty()) throw Error("{} line {}: the prompt is empty", o.prompts, pl.line);
    max_prompt = std::max(max_prompt, int(ids.size()));
    for (int s = 0; s < o.num_samples; s++) {
      WorkItem w;
      w.id = pl.id;
      w.sample = s;
      w.prompt = prompt;
      w.tokens = ids;
      w.source = o.prompts;
      items.push_back(w);
    }
  }
  if (items.empty()) throw Error("{}: no prompts", o.prompts);
  int context = max_prompt + o.max_tokens;
  if (model->config().arch == Arch::Gpt2) context = std::min(context, model->config().max_position);
  if (max_prompt >= context)
    throw Error("{}: a prompt of {} tokens leaves no room to generate within the model's {} "
                "positions", o.prompts, max_prompt, model->config().max_position);

  nlohmann::json sampling = {{"mode", "generate"}, {"temperature", o.temperature},
                             {"top_p", o.top_p}, {"top_k", o.top_k_sampling}, {"min_p", o.min_p},
                             {"max_tokens", o.max_tokens}, {"seed", o.seed}};
  std::unique_ptr<WatermarkProcessor> watermark;
  if (!o.watermark.empty()) {
    const WatermarkKey key = load_watermark_key(o.watermark);
    if (key.scheme == WatermarkScheme::kAaronson &&
        (o.top_p < 1.0f || o.top_k_sampling > 0 || o.min_p > 0.0f || o.temperature <= 0.0f))
      throw Error("{}: the aaronson watermark draws from the whole distribution at the sampling "
                  "temperature: it needs a temperature > 0 and no --top-p, --top-k-sampling or "
                  "--min-p (distill serve applies it after top-p)", o.watermark);
    watermark = std::make_unique<WatermarkProcessor>(key, o.temperature);
    sampling["watermark"] = key.describe();  // the parameters, never the secret
  }
  // Under mpirun the ranks take the waves round-robin and rank 0 writes them in order: the
  // waves, and so the dataset, are the ones a single process makes.
  std::optional<DatasetWriter> writer;
  if (dist::is_root())
    writer.emplace(DatasetWriter::open(
        o.out, make_header(o.teacher, *tok, o.top_k, o.encoding, sampling), o.resume));
  std::vector<const WorkItem*> todo;
  for (int64_t i : share_todo(writer, items)) todo.push_back(&items[size_t(i)]);
  std::optional<Meter> meter;
  if (writer) {
    meter.emplace(progress, int64_t(items.size()), int64_t(items.size() - todo.size()));
    if (writer->resumed().records > 0) meter->note(resume_note(*writer));
  }

  GenerateOptions go;
  go.sampling = SamplingOptions{o.temperature, o.top_k_sampling, o.top_p, o.min_p};
  go.sampling.vocab_limit = tok->vocab_size();  // ids past it (padding) have no text
  go.max_tokens = o.max_tokens;
  go.top_logprobs = o.top_k;
  if (tok->eos_id()) go.stop_ids = {*tok->eos_id()};
  Generator gen(*model, o.batch, context);
  const size_t wave = size_t(o.batch), ranks = size_t(dist::size());
  if (!o.stop.empty())
    go.stop = [&](int, const std::vector<int32_t>& generated) {
      const std::string text = tok->decode(generated);
      for (const std::string& stop : o.stop)
        if (text.find(stop) != std::string::npos) return true;
      return false;
    };
  // Records are written in waves of `batch` prompts so a kill loses at most one wave's work (a
  // round of waves under mpirun: wave i of a round is rank i's).
  for (size_t round = 0; round < todo.size(); round += wave * ranks) {
    Packer mine;
    if (const size_t begin = round + wave * size_t(dist::rank()); begin < todo.size()) {
      const size_t end = std::min(todo.size(), begin + wave);
      std::vector<std::vector<int32_t>> prompts;
      // Each request's seed depends on (id, sample) only, not on which requests share its
      // wave, so a resumed run samples the same text.
      go.request_seeds.clear();
      for (size_t i = begin; i < end; i++) {
        prompts.push_back(todo[i]->tokens);
        go.request_seeds.push_back(o.seed ^
                                   (fnv1a(todo[i]->id) * 1000003u + uint64_t(todo[i]->sample)));
      }
      for (const Generation& g : gen.generate(prompts, go, watermark.get())) mine.put(g);
    }
    const std::vector<std::string> parts = dist::gather(mine.bytes());
    for (size_t rank = 0; writer && rank < ranks; rank++) {
      Unpacker in(parts[rank]);
      const size_t begin = round + wave * rank, end = std::min(todo.size(), begin + wave);
      for (size_t i = begin; i < end; i++) {
        const WorkItem& w = *todo[i];
        const Generation g = in.generation();
        DatasetRecord r;
        r.id = w.id;
        r.sample = w.sample;
        r.prompt = w.prompt;
        r.completion = tok->decode(g.tokens);
        r.source = w.source;
        r.teacher = o.teacher;
        r.tokens = w.tokens;
        r.tokens.insert(r.tokens.end(), g.tokens.begin(), g.tokens.end());
        r.prompt_tokens = int32_t(w.tokens.size());
        r.first_target = r.prompt_tokens;
        r.rows.resize(0, o.top_k);
        for (const TokenLogprobs& lp : g.logprobs) append_rows(r.rows, lp);
        r.extra = {{"finish_reason", g.finish_reason}};
        writer->append(r);
        meter->record(writer->size(), int64_t(g.tokens.size()));
      }
    }
  }
  if (writer) writer->close();
}

}  // namespace distill
