#include "eval/task_builder.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"

namespace distill {
namespace {

bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// The answer starting at `pos` (a word start after a space): `words` words of letters separated
// by single spaces, the last one followed by something that is not a letter. Empty if the text
// there does not have that shape.
std::string answer_at(const std::string& text, size_t pos, size_t end, int words) {
  size_t p = pos;
  for (int w = 0; w < words; w++) {
    if (w > 0) {
      if (p >= end || text[p] != ' ') return {};
      p++;
    }
    const size_t start = p;
    while (p < end && is_letter(text[p])) p++;
    if (p == start) return {};
  }
  if (p >= end || is_letter(text[p]) || text[p] == '\'' || (text[p] >= '0' && text[p] <= '9'))
    return {};
  return text.substr(pos, p - pos);
}

}  // namespace

std::vector<NextWordsExample> make_next_words_task(const std::vector<std::string>& paths,
                                                   const NextWordsTaskOptions& o) {
  if (paths.empty()) throw Error("next-words task: no text files given");
  if (!(o.val_fraction > 0.0 && o.val_fraction < 1.0))
    throw Error("next-words task: held-out fraction must be in (0, 1), found {}", o.val_fraction);
  if (o.count < 1 || o.context_bytes < 8 || o.answer_words < 1 || o.min_answer_bytes < 1 ||
      o.prefix_letters < 0)
    throw Error("next-words task: count, answer words and minimum answer bytes must be positive, "
                "prefix letters not negative and the context at least 8 bytes (found {}, {}, {}, "
                "{}, {})", o.count, o.answer_words, o.min_answer_bytes, o.prefix_letters,
                o.context_bytes);
  const size_t prefix = size_t(o.prefix_letters);
  struct Candidate {
    size_t file;
    size_t pos;
  };
  std::vector<std::string> texts;
  std::vector<Candidate> candidates;
  for (size_t f = 0; f < paths.size(); f++) {
    texts.push_back(read_file_text(paths[f]));
    const std::string& text = texts.back();
    const size_t nval = size_t(double(text.size()) * o.val_fraction);  // as TextCorpus splits
    const size_t begin = o.held_out ? text.size() - nval : 0;
    const size_t end = o.held_out ? text.size() : text.size() - nval;
    // An answer needs a full context before it inside the part, and a word start after a space.
    for (size_t pos = begin + size_t(o.context_bytes); pos < end; pos++) {
      if (text[pos - 1] != ' ' || !is_letter(text[pos])) continue;
      const std::string a = answer_at(text, pos, end, o.answer_words);
      // The first word must be longer than the prefix (the answer starts inside it).
      const size_t first_word = std::min(a.find(' '), a.size());
      if (first_word > prefix && a.size() - prefix >= size_t(o.min_answer_bytes))
        candidates.push_back({f, pos});
    }
  }
  if (candidates.size() < size_t(o.count))
    throw Error("next-words task: {} ({} file(s)) has {} candidate answers in its {} part, fewer "
                "than the {} asked for", paths[0], paths.size(), candidates.size(),
                o.held_out ? "held-out" : "training", o.count);
  // A seeded partial Fisher-Yates draw, then text order.
  Rng rng(o.seed);
  for (size_t i = 0; i < size_t(o.count); i++)
    std::swap(candidates[i], candidates[i + rng.below(candidates.size() - i)]);
  candidates.resize(size_t(o.count));
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return a.file != b.file ? a.file < b.file : a.pos < b.pos;
  });
  std::vector<NextWordsExample> out;
  for (const Candidate& c : candidates) {
    const std::string& text = texts[c.file];
    size_t start = c.pos - size_t(o.context_bytes);
    // Start at a word (or line) start: skip a partial word and the blanks after it.
    if (start > 0 && !is_space(text[start - 1])) {
      while (start < c.pos && !is_space(text[start])) start++;
      while (start < c.pos && is_space(text[start])) start++;
    }
    NextWordsExample e;
    e.id = fmt::format("{}:{}", std::filesystem::path(paths[c.file]).stem().string(), c.pos + prefix);
    e.prompt = text.substr(start, c.pos + prefix - start);
    e.answer = answer_at(text, c.pos, text.size(), o.answer_words).substr(prefix);
    e.next_text = text.substr(c.pos + prefix, 256);
    out.push_back(std::move(e));
  }
  return out;
}

void write_next_words_task(const std::string& path, const std::vector<NextWordsExample>& examples) {
  std::string body;
  for (const NextWordsExample& e : examples)
    body += nlohmann::json{{"id", e.id}, {"prompt", e.prompt}, {"answer", e.answer}}.dump(
                -1, ' ', false, nlohmann::json::error_handler_t::replace) +
            "\n";
  write_file_atomic(path, body.data(), body.size());
}

}  // namespace distill
