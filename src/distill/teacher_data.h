// Teacher data: `distill generate` (the teacher completes prompts; per generated token its top-k
// log-probabilities) and `distill score` (teacher-forced top-k log-probabilities of existing
// text, like prompt_logprobs), both written as a dataset (data/dataset.h), resumable after a
// kill with no lost or duplicated records.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kernels/qmatmul.h"
#include "tokenizer/chat_template.h"

namespace distill {

struct TeacherDataProgress {
  int64_t done = 0, total = 0;  // records in this dataset (resumed ones included)
  int64_t skipped = 0;          // records found already written (resume)
  int64_t tokens = 0;           // teacher tokens processed by this run
  double tokens_per_s = 0.0, eta_s = 0.0;
  std::string note;             // one-off messages (resume summary)
};
using TeacherDataProgressFn = std::function<void(const TeacherDataProgress&)>;

struct ScoreOptions {
  std::string teacher;             // model directory
  WeightType weights = WeightType::F32;  // the teacher's linear layers (kernels/qmatmul.h)
  std::vector<std::string> text;   // text files: split into windows; or .jsonl with "text" (+ "id")
  std::string out;                 // dataset directory
  int top_k = 20;                  // teacher log-probabilities kept per position
  int seq_len = 256;               // tokens per window (text files)
  double val_fraction = 0.05;      // text files: the tail held out (not scored), as TextCorpus
  int64_t max_records = 0;         // 0: all windows; else this many, spread evenly over the text
  std::string encoding = "compact";
  bool resume = false;
};

struct GenerateDataOptions {
  std::string teacher;             // model directory
  WeightType weights = WeightType::F32;  // the teacher's linear layers (kernels/qmatmul.h)
  std::string prompts;             // JSONL: {"prompt": text} or {"messages": [...]}, optional "id"
  std::string out;                 // dataset directory
  int num_samples = 1;             // completions per prompt
  int max_tokens = 128;
  float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f;
  int top_k_sampling = 0;
  uint64_t seed = 0;
  int top_k = 20;                  // teacher log-probabilities kept per generated token
  int batch = 8;                   // sequences decoded together
  std::vector<std::string> stop;   // stop strings
  std::string encoding = "compact";
  bool resume = false;
  std::string watermark;           // watermark key file (forensics/watermark.h); "" = none
};

// One line of a prompt file (`distill generate`, `distill harvest`): {"prompt": text} or
// {"messages": [{"role", "content"}, ...]}, with an optional "id" (a string, or any JSON value
// used as its text; "line:N" when absent).
struct PromptLine {
  int64_t line = 0;
  std::string id;
  std::optional<std::string> prompt;   // set for "prompt" lines
  std::vector<ChatMessage> messages;   // set for "messages" lines
};
// Errors name the file and line: not JSON, neither "prompt" nor "messages", wrong types, a
// duplicate id.
std::vector<PromptLine> read_prompt_file(const std::string& path);

void score_text(const ScoreOptions& options, const TeacherDataProgressFn& progress);
void generate_data(const GenerateDataOptions& options, const TeacherDataProgressFn& progress);

}  // namespace distill
