// Hugging Face tokenizer.json (BPE models: GPT-2, Qwen, Llama 3, Mistral, ...) read into a
// PipelineTokenizer. WordPiece, WordLevel and Unigram models are refused with a clear error.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace distill {

// Parses tokenizer.json text. `source` names it in errors ("<source>: /model/merges/3: ...").
// `tokenizer_config` (the sibling tokenizer_config.json, may be null) names BOS and EOS; without
// it they come from the post-processor's template.
std::unique_ptr<Tokenizer> hf_tokenizer_from_json(std::string_view json_text,
                                                  const std::string& source,
                                                  const nlohmann::json* tokenizer_config);

// Reads `path` (a tokenizer.json) and, when present, tokenizer_config.json beside it.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);

}  // namespace distill
