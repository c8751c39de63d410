// `distill prepare task`: a next-words task file (JSONL {"id", "prompt", "answer"}) from text,
// for `distill eval --task` (held-out part) or as prompts for `distill generate` (training part).
#include <fmt/format.h>

#include "cli/verbs.h"
#include "eval/task_builder.h"

namespace distill::cli {

VerbRun add_prepare(CLI::App& app) {
  app.require_subcommand(1);
  CLI::App* task = app.add_subcommand(
      "task", "next-words task from text: passages as prompts, the words after them as answers");
  struct Args {
    std::vector<std::string> text;
    std::string out;
    std::string part = "held-out";
    NextWordsTaskOptions o;
  };
  auto a = std::make_shared<Args>();
  task->add_option("--text", a->text, "text files")->required();
  task->add_option("--out", a->out, "task file to write (JSONL)")->required();
  task->add_option("--part", a->part,
                   "held-out: the tail `distill pretrain`/`score` leave out; train: the rest")
      ->check(CLI::IsMember({"held-out", "train"}));
  task->add_option("--val-fraction", a->o.val_fraction, "held-out tail of each file (bytes)");
  task->add_option("--count", a->o.count, "examples");
  task->add_option("--context-bytes", a->o.context_bytes, "prompt length in bytes, at most");
  task->add_option("--answer-words", a->o.answer_words, "words per answer");
  task->add_option("--min-answer-bytes", a->o.min_answer_bytes, "shortest answer kept");
  task->add_option("--prefix-letters", a->o.prefix_letters,
                   "word completion: the prompt ends this many letters into the answer's word");
  task->add_option("--seed", a->o.seed, "seed for the positions");
  return [a] {
    a->o.held_out = a->part == "held-out";
    const auto examples = make_next_words_task(a->text, a->o);
    write_next_words_task(a->out, examples);
    size_t prompt_bytes = 0;
    for (const auto& e : examples) prompt_bytes += e.prompt.size();
    fmt::print("wrote {} examples ({} part, mean prompt {} bytes) to {}\n", examples.size(),
               a->part, examples.empty() ? 0 : prompt_bytes / examples.size(), a->out);
    return 0;
  };
}

}  // namespace distill::cli
