#include "tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace distill {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("{}: cannot open", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::ordered_json read_json(const std::string& path) {
  try {
    return nlohmann::ordered_json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("{}: not valid JSON: {}", path, e.what());
  }
}

// A chat_template value: a string, or a list of {"name", "template"} of which transformers uses
// "default" when no tools are given.
std::string template_text(const nlohmann::ordered_json& t, const std::string& path) {
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    std::string names;
    for (const auto& entry : t) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template"))
        throw Error("{}: chat_template list entries must be {{\"name\", \"template\"}} objects", path);
      if (entry["name"] == "default" && entry["template"].is_string())
        return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].dump();
    }
    throw Error("{}: chat_template has no template named \"default\" (has {})", path, names);
  }
  throw Error("{}: chat_template must be a string or a list of named templates, found {}", path,
              t.type_name());
}

// bos_token, eos_token, ...: a string or an AddedToken object {"content": ...}; null is absent.
std::map<std::string, std::string> special_tokens_of(const nlohmann::ordered_json& config) {
  std::map<std::string, std::string> tokens;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    const auto& v = config[key];
    if (v.is_string()) tokens[key] = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      tokens[key] = v["content"].get<std::string>();
  }
  return tokens;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens,
                           std::string origin)
    : source_(std::move(source)),
      special_tokens_(std::move(special_tokens)),
      template_(source_, std::move(origin)) {}

ChatTemplate ChatTemplate::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::string config_path = path;
  std::optional<std::string> source;
  std::string origin;
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    config_path = (dir / "tokenizer_config.json").string();
    if (fs::exists(dir / "chat_template.jinja")) {
      origin = (dir / "chat_template.jinja").string();
      source = read_text(origin);
    } else if (fs::exists(dir / "chat_template.json")) {
      origin = (dir / "chat_template.json").string();
      const auto j = read_json(origin);
      if (!j.is_object() || !j.contains("chat_template"))
        throw Error("{}: expected an object with a \"chat_template\" member", origin);
      source = template_text(j["chat_template"], origin);
      origin += " chat_template";
    }
    if (!fs::exists(config_path)) {
      if (!source) throw Error("{}: no tokenizer_config.json or chat_template.jinja in the directory", path);
      return ChatTemplate(std::move(*source), {}, origin);
    }
  }
  const auto config = read_json(config_path);
  if (!config.is_object()) throw Error("{}: expected a JSON object", config_path);
  if (!source) {
    origin = config_path + " chat_template";  // positions are within the template text
    if (!config.contains("chat_template") || config["chat_template"].is_null())
      throw Error("{}: this tokenizer has no chat_template", path);
    source = template_text(config["chat_template"], config_path);
  }
  return ChatTemplate(std::move(*source), special_tokens_of(config), origin);
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& options) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  return apply_json(list, options);
}

std::string ChatTemplate::apply_json(const nlohmann::ordered_json& messages,
                                     const ChatTemplateOptions& options) const {
  if (!messages.is_array()) throw Error("chat template: messages must be a JSON array");
  if (!options.variables.is_object()) throw Error("chat template: variables must be a JSON object");
  // The variables transformers passes: messages, tools and documents (None unless given),
  // add_generation_prompt, the special tokens, then the caller's keyword arguments.
  jinja::Object vars;
  auto set = [&](const std::string& k, jinja::Value v) {
    for (auto& kv : vars)
      if (kv.first == k) {
        kv.second = std::move(v);
        return;
      }
    vars.emplace_back(k, std::move(v));
  };
  set("messages", jinja::Value::from_json(messages));
  set("tools", jinja::Value::none());
  set("documents", jinja::Value::none());
  set("add_generation_prompt", jinja::Value(options.add_generation_prompt));
  for (const auto& [k, v] : special_tokens_) set(k, jinja::Value(v));
  if (options.enable_thinking) set("enable_thinking", jinja::Value(*options.enable_thinking));
  for (const auto& [k, v] : options.variables.items()) set(k, jinja::Value::from_json(v));
  return template_.render(vars);
}

}  // namespace distill
