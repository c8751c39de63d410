// Task suites: a JSONL file of {"prompt": ..., "answer": ...} lines; each prompt is continued by
// greedy generation and the continuation is scored against the answer by exact match and by
// "contains".
//
// Scoring rules (both case-sensitive):
//   continuation  the generated text up to (not including) its first line break that follows
//                 non-blank text, so one-line answers are compared with one line of output
//                 (task_continuation);
//   normalize     leading and trailing whitespace removed, each run of inner whitespace made one
//                 space (normalize_task_text), applied to the continuation and to the answer;
//   exact match   the normalized continuation, cut at the normalized answer's length in bytes,
//                 equals the answer, and the cut falls on a word boundary: the continuation ends
//                 there or its next character is not a letter or digit (so "Paris." and "Paris is"
//                 match "Paris", "Parisian" does not);
//   contains      the normalized answer occurs anywhere in the normalized continuation.
// An exact match always contains the answer.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace distill {

struct TaskExample {
  std::string prompt;
  std::string answer;
  int64_t line = 0;  // 1-based line in the task file
};

// Reads a task file. Blank lines are skipped; any other line that is not a JSON object with
// string "prompt" and non-blank string "answer" is an error "FILE line N: ...". Extra keys are
// allowed (ignored). A file without examples is an error.
std::vector<TaskExample> load_task_file(const std::string& path);

std::string normalize_task_text(std::string_view text);
std::string task_continuation(std::string_view generated);
bool task_exact_match(std::string_view continuation, std::string_view answer);
bool task_contains(std::string_view continuation, std::string_view answer);

struct TaskOutcome {
  std::string continuation;  // what was scored (task_continuation of the decoded output)
  bool exact = false;
  bool contains = false;
  int64_t generated_tokens = 0;
};

struct TaskScore {
  int64_t prompts = 0;      // examples behind the rates
  int64_t exact = 0;        // examples scored as exact matches
  int64_t contains = 0;     // examples whose continuation contains the answer
  double exact_rate = 0.0;  // exact / prompts
  double contains_rate = 0.0;
  std::vector<TaskOutcome> outcomes;  // one per example, in file order
};

// Scores a model's continuations (already generated and decoded) against the examples.
TaskScore score_task_outputs(const std::vector<TaskExample>& examples,
                             const std::vector<std::string>& generated,
                             const std::vector<int64_t>& generated_tokens);

struct TaskRunOptions {
  int max_new_tokens = 16;  // greedy tokens per prompt (generation also stops at EOS and at a
                            // line break after non-blank text)
  int batch = 8;            // prompts decoded together
  std::string source;       // the task file, named in errors
  std::string model_name;   // named in errors
};

// Greedy generation for every example (prompts encoded with the tokenizer's special tokens,
// e.g. BOS), decoded without special tokens, then scored. A prompt that leaves no room for
// max_new_tokens within the model's context is an error naming the file and line.
TaskScore run_task_suite(Model& model, const Tokenizer& tokenizer,
                         const std::vector<TaskExample>& examples, const TaskRunOptions& options,
                         const std::function<void(int done, int total)>& progress = {});

}  // namespace distill
