// Builds a "next words" task from plain text: each example is a passage of the text (the prompt,
// ending just before a word) and the word(s) that follow it in the text (the answer). A model
// that continues the passage greedily is scored by task_suite's exact-match and contains rules.
// Drawn from the held-out tail of each file (the same last val_fraction of bytes that
// TextCorpus, `distill pretrain` and `distill score` leave out), so no model trained on the
// rest of the file has seen the answers; or from the training part, for task-style prompts to
// distill on.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace distill {

struct NextWordsTaskOptions {
  double val_fraction = 0.05;  // the held-out tail of each file, in bytes
  bool held_out = true;        // draw from the held-out tail (false: from the training part)
  int count = 200;             // examples in all, spread evenly over the files' parts
  int context_bytes = 256;     // prompt length, at most (cut back to the start of a word)
  int answer_words = 1;        // words in the answer
  int min_answer_bytes = 3;    // skip answers shorter than this ("a", "of")
  // Word completion: the prompt also holds the first `prefix_letters` letters of the answer's
  // first word, and the answer is the rest (at least min_answer_bytes of it): "children of Is"
  // -> "rael". 0: the prompt ends with the space before the answer.
  int prefix_letters = 0;
  uint64_t seed = 1;
};

struct NextWordsExample {
  std::string id;      // "<file stem>:<byte offset of the answer>"
  std::string prompt;  // text before the answer (the space before it, or the word's prefix)
  std::string answer;  // answer_words words of letters, as in the text
  std::string next_text;  // the text right after the prompt, as it is (up to 256 bytes)
};

// Examples are distinct, in text order, at random positions (seeded); each answer word is made
// of ASCII letters only (no verse numbers, no punctuation), and the prompt does not start in
// the middle of a word. Errors: unreadable file, a part too small to hold one example, or fewer
// candidate positions than `count`.
std::vector<NextWordsExample> make_next_words_task(const std::vector<std::string>& paths,
                                                   const NextWordsTaskOptions& options);

// Writes examples as JSONL {"id", "prompt", "answer"} atomically (temp file, fsync, rename).
void write_next_words_task(const std::string& path, const std::vector<NextWordsExample>& examples);

}  // namespace distill
