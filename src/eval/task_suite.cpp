#include "eval/task_suite.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/generator.h"

namespace distill {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Letters and digits, counting every byte of a multi-byte UTF-8 character as a letter.
bool is_word_byte(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return u >= 0x80 || (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
}

const char* json_type(const nlohmann::json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  return "a string";
}

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end())
    throw Error("{}: missing \"{}\" (expected {{\"prompt\": ..., \"answer\": ...}})", where, key);
  if (!it->is_string())
    throw Error("{}: \"{}\" must be a string, found {}", where, key, json_type(*it));
  return it->get<std::string>();
}

}  // namespace

std::vector<TaskExample> load_task_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("{}: cannot open task file", path);
  std::vector<TaskExample> examples;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    number++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (std::all_of(line.begin(), line.end(), is_space)) continue;
    const std::string where = fmt::format("{} line {}", path, number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("{}: not valid JSON: {}", where, e.what());
    }
    if (!j.is_object())
      throw Error("{}: expected a JSON object {{\"prompt\": ..., \"answer\": ...}}, found {}",
                  where, json_type(j));
    TaskExample ex;
    ex.prompt = string_field(j, "prompt", where);
    ex.answer = string_field(j, "answer", where);
    ex.line = number;
    if (ex.prompt.empty()) throw Error("{}: \"prompt\" is empty", where);
    if (normalize_task_text(ex.answer).empty()) throw Error("{}: \"answer\" is blank", where);
    examples.push_back(std::move(ex));
  }
  if (in.bad()) throw Error("{}: read error", path);
  if (examples.empty())
    throw Error("{}: no task examples (expected JSONL lines {{\"prompt\": ..., \"answer\": ...}})",
                path);
  return examples;
}

std::string normalize_task_text(std::string_view text) {
  std::string out;
  bool gap = false;
  for (char c : text) {
    if (is_space(c)) {
      gap = !out.empty();
      continue;
    }
    if (gap) out += ' ';
    gap = false;
    out += c;
  }
  return out;
}

std::string task_continuation(std::string_view generated) {
  bool seen_text = false;
  for (size_t i = 0; i < generated.size(); i++) {
    if (generated[i] == '\n' && seen_text) return std::string(generated.substr(0, i));
    if (!is_space(generated[i])) seen_text = true;
  }
  return std::string(generated);
}

bool task_exact_match(std::string_view continuation, std::string_view answer) {
  const std::string g = normalize_task_text(continuation), a = normalize_task_text(answer);
  if (a.empty() || g.size() < a.size() || g.compare(0, a.size(), a) != 0) return false;
  return g.size() == a.size() || !is_word_byte(g[a.size()]);
}

bool task_contains(std::string_view continuation, std::string_view answer) {
  const std::string a = normalize_task_text(answer);
  return !a.empty() && normalize_task_text(continuation).find(a) != std::string::npos;
}

TaskScore score_task_outputs(const std::vector<TaskExample>& examples,
                             const std::vector<std::string>& generated,
                             const std::vector<int64_t>& generated_tokens) {
  DISTILL_CHECK(generated.size() == examples.size() && generated_tokens.size() == examples.size());
  TaskScore s;
  for (size_t i = 0; i < examples.size(); i++) {
    TaskOutcome o;
    o.continuation = task_continuation(generated[i]);
    o.exact = task_exact_match(o.continuation, examples[i].answer);
    o.contains = task_contains(o.continuation, examples[i].answer);
    o.generated_tokens = generated_tokens[i];
    s.exact += o.exact;
    s.contains += o.contains;
    s.outcomes.push_back(std::move(o));
  }
  s.prompts = int64_t(examples.size());
  if (s.prompts > 0) {
    s.exact_rate = double(s.exact) / double(s.prompts);
    s.contains_rate = double(s.contains) / double(s.prompts);
  }
  return s;
}

TaskScore run_task_suite(Model& model, const Tokenizer& tokenizer,
                         const std::vector<TaskExample>& examples, const TaskRunOptions& o,
                         const std::function<void(int, int)>& progress) {
  if (o.max_new_tokens < 1)
    throw Error("max-new-tokens must be at least 1, found {}", o.max_new_tokens);
  const int context = model.config().max_position;
  EncodeOptions enc;
  enc.add_special_tokens = true;
  std::vector<std::vector<int32_t>> prompts;
  int longest = 0;
  for (const TaskExample& ex : examples) {
    prompts.push_back(tokenizer.encode(ex.prompt, enc));
    if (prompts.back().empty())
      throw Error("{} line {}: the prompt encodes to no tokens", o.source, ex.line);
    const int need = int(prompts.back().size()) + o.max_new_tokens;
    if (need > context)
      throw Error(
          "{} line {}: prompt of {} tokens + {} new tokens exceeds the context of {} "
          "({} tokens)",
          o.source, ex.line, prompts.back().size(), o.max_new_tokens, o.model_name, context);
    longest = std::max(longest, need);
  }
  Generator gen(model, std::max(1, std::min(o.batch, int(prompts.size()))), longest + 1);
  GenerateOptions g;
  g.sampling.temperature = 0.0f;  // greedy
  g.sampling.vocab_limit = tokenizer.vocab_size();  // a padded vocabulary's padding has no text
  g.max_tokens = o.max_new_tokens;
  if (const auto eos = tokenizer.eos_id()) g.stop_ids.push_back(*eos);
  // Stop once a line break follows non-blank text: the rest would not be scored.
  g.stop = [&](int, const std::vector<int32_t>& tokens) {
    const std::string text = tokenizer.decode(tokens, true);
    return task_continuation(text).size() < text.size();
  };
  const std::vector<Generation> out =
      gen.generate(prompts, g, nullptr, [&](int done, int total, int64_t) {
        if (progress) progress(done, total);
      });
  std::vector<std::string> texts;
  std::vector<int64_t> counts;
  for (const Generation& gen_out : out) {
    texts.push_back(tokenizer.decode(gen_out.tokens, true));
    counts.push_back(int64_t(gen_out.tokens.size()));
  }
  return score_task_outputs(examples, texts, counts);
}

}  // namespace distill
