// Chat templates: turns a conversation into the prompt text a chat model was trained on, by
// rendering the Jinja `chat_template` its tokenizer ships, as Hugging Face transformers'
// apply_chat_template(..., tokenize=False) does.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/jinja.h"

namespace distill {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool", ...
  std::string content;
};

struct ChatTemplateOptions {
  // Append the text that opens the assistant's turn (e.g. "<|im_start|>assistant\n").
  bool add_generation_prompt = false;
  // Qwen3: false asks for an answer without reasoning (an empty <think></think> block); unset
  // leaves the variable undefined, as transformers does unless it is passed.
  std::optional<bool> enable_thinking;
  // Further template variables (tools, documents, date_string, ...), as apply_chat_template's
  // keyword arguments; they override everything else of the same name.
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // `source`: the Jinja text; `special_tokens`: bos_token, eos_token, ... as the template sees
  // them; `origin` names the template in errors.
  ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens,
               std::string origin);

  // The chat template of a tokenizer_config.json, or of a model directory (chat_template.jinja,
  // chat_template.json or tokenizer_config.json, in that order, as transformers looks). A
  // tokenizer without one is an error: "<path>: this tokenizer has no chat_template".
  static ChatTemplate from_file(const std::string& path);

  std::string apply(const std::vector<ChatMessage>& messages,
                    const ChatTemplateOptions& options = {}) const;
  // Messages as JSON objects, for fields beyond role and content (tool_calls, reasoning_content).
  std::string apply_json(const nlohmann::ordered_json& messages,
                         const ChatTemplateOptions& options = {}) const;

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }

 private:
  std::string source_;
  std::map<std::string, std::string> special_tokens_;
  jinja::Template template_;
};

}  // namespace distill
