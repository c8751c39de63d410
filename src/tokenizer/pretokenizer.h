// Hugging Face pre-tokenizers: cut normalized text into the words the model encodes one by one
// (Split by regex or string with the five delimiter behaviours, ByteLevel, Metaspace, Digits,
// Punctuation, Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, Sequence).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill {

// Byte range [begin, end) of a word in PreTokenized::text.
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

// The text being pre-tokenized and its current words, in order. Steps that only split rewrite
// `spans`; steps that rewrite characters (Metaspace, ByteLevel) rebuild `text` too.
struct PreTokenized {
  std::string text;
  std::vector<Span> spans;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and maybe rewrites) the words of `words`. `at_text_start`: words.text begins the
  // caller's input (Metaspace's prepend_scheme "first" prepends only there).
  virtual void apply(PreTokenized& words, bool at_text_start) const = 0;
};

// What to do with the pieces a pattern matches (HF SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// The GPT-2 pre-tokenizer regex (HF ByteLevel use_regex).
extern const char* const kGpt2Pattern;

std::unique_ptr<PreTokenizer> make_regex_split(const std::string& pattern, SplitBehavior behavior,
                                               bool invert);
// map_bytes=false leaves the byte→character mapping to a model that works on bytes directly.
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex,
                                              bool map_bytes);
std::unique_ptr<PreTokenizer> make_sequence(std::vector<std::unique_ptr<PreTokenizer>> steps);

// From a tokenizer.json "pre_tokenizer" value (not null). With defer_byte_mapping, a ByteLevel
// that is the last step (alone or last of a top-level Sequence) does not map bytes to
// characters, and *byte_mapping_deferred says whether that happened.
std::unique_ptr<PreTokenizer> pre_tokenizer_from_json(const nlohmann::json& j,
                                                      const std::string& path,
                                                      bool defer_byte_mapping,
                                                      bool* byte_mapping_deferred);

}  // namespace distill
