// A Jinja2 subset interpreter for chat templates (the `chat_template` of tokenizer_config.json).
//
// It follows the semantics Hugging Face transformers renders chat templates with: Jinja2's
// sandboxed environment with trim_blocks and lstrip_blocks on, the loopcontrols extension
// (break/continue), Python value semantics (str/list/dict, None, True/False), and no trailing
// newline kept. Supported: text, {{ }}, {# #}, whitespace control (-, +), if/elif/else,
// for (tuple targets, loop.*, `if` filter, else), set (names, namespace attributes, blocks),
// break/continue, generation blocks; expressions with literals, lists, dicts, attribute/subscript
// and slices, filters, tests, calls, arithmetic, `~`, comparisons, in/not in, and/or/not, inline if.
// Anything else (macro, include, an unknown filter or method, ...) is a distill::Error naming the
// construct and its line:column in the template — never a silently wrong render.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill::jinja {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // keeps insertion order, as Python

// A callable global (raise_exception, namespace, range, strftime_now, ...).
struct Function {
  std::string name;
  // Positional and keyword arguments; throws distill::Error (without position: the caller adds it).
  std::function<Value(const Array& args, const Object& kwargs)> call;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  Value() = default;  // undefined
  static Value undefined(std::string what);  // `what` says why, for error messages
  static Value none();
  Value(bool b);
  Value(int i);
  Value(int64_t i);
  Value(double f);
  Value(std::string s);
  Value(const char* s);
  Value(Array a);
  Value(Object o);
  static Value tuple(Array a);              // a list that prints as Python's tuple: (1, 2)
  static Value namespace_object(Object o);  // a mutable object for `set ns.attr = ...`
  static Value function(std::string name, decltype(Function::call) call);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }  // list or tuple
  bool is_tuple() const { return kind_ == Kind::kArray && tuple_; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_namespace() const { return kind_ == Kind::kObject && namespace_; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return is_bool() ? int64_t(b_) : is_float() ? int64_t(f_) : i_; }
  double as_float() const { return is_float() ? f_ : double(as_int()); }
  const std::string& str() const { return *s_; }  // string, or an undefined value's reason
  const Array& array() const { return *a_; }
  const Object& object() const { return *o_; }
  Object& mutable_object() const { return *o_; }  // namespaces only
  const Function& func() const { return *fn_; }

  const Value* find(std::string_view key) const;  // object member, or null
  bool truthy() const;                             // Python truthiness; undefined is false
  const char* type_name() const;                   // Python-ish: "str", "list", "dict", ...

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool namespace_ = false;
  bool tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const Array> a_;
  std::shared_ptr<Object> o_;
  std::shared_ptr<const Function> fn_;
};

// Python's str(v) (what {{ v }} prints; undefined prints nothing) and repr(v).
std::string to_str(const Value& v);
std::string repr(const Value& v);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=False), as transformers' tojson.
std::string to_json(const Value& v, int indent = -1);

class Template {
 public:
  // Parses `source`; `origin` names it in errors ("<origin>:<line>:<col>: ...").
  Template(std::string source, std::string origin);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `variables` as the global names (plus the built-in globals).
  std::string render(const Object& variables) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace distill::jinja
