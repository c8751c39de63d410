// Jinja built-ins for chat templates: the filters and tests of Jinja2 that shipped templates use,
// the Python str/dict methods they call, and transformers' globals (raise_exception,
// strftime_now) beside Jinja's (namespace, range, dict). Python semantics throughout.
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"

namespace distill::jinja {

// ---------------------------------------------------------------------------------------------
// Python semantics

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

uint32_t code_point(const std::string& ch) {
  const unsigned char c = ch[0];
  if (c < 0x80 || ch.size() == 1) return c;
  uint32_t cp = c & (0x7F >> ch.size());
  for (size_t k = 1; k < ch.size(); k++) cp = (cp << 6) | (ch[k] & 0x3F);
  return cp;
}

std::string from_code_point(uint32_t cp) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
  return std::string(reinterpret_cast<char*>(buf), size_t(n));
}

// Python's str.isspace().
bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  for (const std::string& ch : utf8_chars(s)) {
    const auto cp = utf8proc_int32_t(code_point(ch));
    out += from_code_point(uint32_t(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
  }
  return out;
}

// Checks and reads a built-in's arguments: positional in order, or by keyword.
class Args {
 public:
  Args(const char* fn, const Array& pos, const Object& kw, std::initializer_list<const char*> names,
       size_t required = 0)
      : fn_(fn), pos_(pos), kw_(kw), names_(names) {
    if (pos.size() > names_.size())
      throw Error("{}() takes at most {} arguments ({} given)", fn, names_.size(), pos.size());
    for (const auto& entry : kw) {
      const auto& k = entry.first;  // not a structured binding: clang 14 cannot capture one
      auto it = std::find_if(names_.begin(), names_.end(), [&](const char* n) { return k == n; });
      if (it == names_.end()) throw Error("{}() got an unexpected keyword argument '{}'", fn, k);
      if (size_t(it - names_.begin()) < pos.size()) throw Error("{}() got multiple values for '{}'", fn, k);
    }
    for (size_t i = 0; i < required; i++)
      if (!get(i)) throw Error("{}() missing required argument '{}'", fn, names_[i]);
  }
  const Value* get(size_t i) const {
    if (i < pos_.size()) return &pos_[i];
    for (const auto& [k, v] : kw_)
      if (k == names_[i]) return &v;
    return nullptr;
  }
  Value get_or(size_t i, Value dflt) const { return get(i) ? *get(i) : dflt; }
  std::string str(size_t i, const std::string& dflt = "") const {
    const Value* v = get(i);
    if (!v || v->is_none()) return dflt;
    if (!v->is_string()) throw Error("{}(): argument '{}' must be a string, not {}", fn_, names_[i], v->type_name());
    return v->str();
  }
  int64_t integer(size_t i, int64_t dflt) const {
    const Value* v = get(i);
    if (!v || v->is_none()) return dflt;
    if (!v->is_int() && !v->is_bool()) throw Error("{}(): argument '{}' must be an integer", fn_, names_[i]);
    return v->as_int();
  }

 private:
  const char* fn_;
  const Array& pos_;
  const Object& kw_;
  std::vector<const char*> names_;
};

std::string require_string(const Value& v, const char* what) {
  if (!v.is_string()) throw Error("{}: expected a string, got {}", what, v.type_name());
  return v.str();
}

int64_t length_of(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return int64_t(utf8_chars(v.str()).size());
  if (v.is_array()) return int64_t(v.array().size());
  if (v.is_object()) return int64_t(v.object().size());
  throw Error("object of type '{}' has no len()", v.type_name());
}

std::vector<std::string> py_split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep) {
    if (sep->empty()) throw Error("split(): empty separator");
    size_t start = 0;
    for (;;) {
      const size_t p = (maxsplit >= 0 && int64_t(parts.size()) >= maxsplit) ? std::string::npos : s.find(*sep, start);
      if (p == std::string::npos) break;
      parts.push_back(s.substr(start, p - start));
      start = p + sep->size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  const std::vector<std::string> chars = utf8_chars(s);
  size_t i = 0;
  while (i < chars.size()) {
    while (i < chars.size() && py_isspace(code_point(chars[i]))) i++;
    if (i == chars.size()) break;
    std::string word;
    if (maxsplit >= 0 && int64_t(parts.size()) >= maxsplit) {
      for (; i < chars.size(); i++) word += chars[i];
      parts.push_back(py_strip(word, false, true));
      break;
    }
    while (i < chars.size() && !py_isspace(code_point(chars[i]))) word += chars[i++];
    parts.push_back(word);
  }
  return parts;
}

std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) throw Error("replace(): an empty search string is not supported");
  std::string out;
  size_t start = 0;
  for (int64_t n = 0; count < 0 || n < count; n++) {
    const size_t p = s.find(from, start);
    if (p == std::string::npos) break;
    out += s.substr(start, p - start) + to;
    start = p + from.size();
  }
  return out + s.substr(start);
}

std::string capitalize(const std::string& s) {
  const auto chars = utf8_chars(s);
  std::string out;
  for (size_t i = 0; i < chars.size(); i++) out += map_case(chars[i], i == 0);
  return out;
}

// Jinja's title filter: upper-case the first character of each word, where words start after
// whitespace or one of -({[<.
std::string title(const std::string& s) {
  std::string out;
  bool start = true;
  for (const std::string& ch : utf8_chars(s)) {
    const uint32_t cp = code_point(ch);
    const bool sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    out += sep ? ch : map_case(ch, start);
    start = sep;
  }
  return out;
}

bool matches_affix(const std::string& s, const Value& affix, bool prefix, const char* fn) {
  auto one = [&](const Value& a) {
    const std::string x = require_string(a, fn);
    return prefix ? s.starts_with(x) : s.ends_with(x);
  };
  if (affix.is_array()) return std::any_of(affix.array().begin(), affix.array().end(), one);
  return one(affix);
}

Value attribute_of(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const Value* f = v.find(key);
    if (!f && v.is_array() && !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit)) {
      const size_t i = std::stoul(key);
      v = i < v.array().size() ? v.array()[i] : Value::undefined("no item " + key);
    } else {
      v = f ? *f : Value::undefined(fmt::format("'{} object' has no attribute '{}'", v.type_name(), key));
    }
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// select/reject (attr empty) and selectattr/rejectattr: args are (test name, test args...).
Value select_items(const Value& seq, const std::string& attr, const Array& args, bool keep_if,
                   const char* fn) {
  Array out;
  std::string test;
  Array targs;
  if (!args.empty()) {
    test = require_string(args[0], fn);
    targs.assign(args.begin() + 1, args.end());
  }
  for (const Value& item : iterate(seq)) {
    const Value v = attr.empty() ? item : attribute_of(item, attr);
    bool ok = v.truthy();
    if (!test.empty()) {
      auto r = apply_test(test, v, targs);
      if (!r) throw Error("{}: unsupported test '{}'", fn, test);
      ok = *r;
    }
    if (ok == keep_if) out.push_back(item);
  }
  return Value(std::move(out));
}

}  // namespace

std::string py_strip(const std::string& s, bool left, bool right, const std::string* chars) {
  const std::vector<std::string> cs = utf8_chars(s);
  std::vector<std::string> set;
  if (chars) set = utf8_chars(*chars);
  auto strip = [&](const std::string& ch) {
    return chars ? std::find(set.begin(), set.end(), ch) != set.end() : py_isspace(code_point(ch));
  };
  size_t b = 0, e = cs.size();
  if (left) while (b < e && strip(cs[b])) b++;
  if (right) while (e > b && strip(cs[e - 1])) e--;
  std::string out;
  for (size_t i = b; i < e; i++) out += cs[i];
  return out;
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.str() == b.str();
    case Value::Kind::kArray:
      return a.is_tuple() == b.is_tuple() && a.array().size() == b.array().size() &&
             std::equal(a.array().begin(), a.array().end(), b.array().begin(), values_equal);
    case Value::Kind::kObject: {
      if (a.is_namespace() || b.is_namespace()) return &a.object() == &b.object();
      if (a.object().size() != b.object().size()) return false;
      for (const auto& [k, v] : a.object()) {
        const Value* w = b.find(k);
        if (!w || !values_equal(v, *w)) return false;
      }
      return true;
    }
    case Value::Kind::kFunction: return &a.func() == &b.func();
    default: return false;
  }
}

int compare_values(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float();
    return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str().compare(b.str()) < 0 ? -1 : a.str() != b.str();
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < a.array().size() && i < b.array().size(); i++)
      if (!values_equal(a.array()[i], b.array()[i])) return compare_values(a.array()[i], b.array()[i]);
    return a.array().size() < b.array().size() ? -1 : a.array().size() > b.array().size();
  }
  throw Error("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name());
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string())
      throw Error("'in <string>' requires string as left operand, not {}", item.type_name());
    return container.str().find(item.str()) != std::string::npos;
  }
  if (container.is_array())
    return std::any_of(container.array().begin(), container.array().end(),
                       [&](const Value& x) { return values_equal(x, item); });
  if (container.is_object()) return item.is_string() && container.find(item.str()) != nullptr;
  if (container.is_undefined()) return false;
  throw Error("argument of type '{}' is not iterable", container.type_name());
}

Array iterate(const Value& v) {
  if (v.is_array()) return v.array();
  if (v.is_undefined()) return {};
  Array out;
  if (v.is_object() && !v.is_namespace()) {
    for (const auto& [k, x] : v.object()) out.emplace_back(k);
    return out;
  }
  if (v.is_string()) {
    for (std::string& ch : utf8_chars(v.str())) out.emplace_back(std::move(ch));
    return out;
  }
  throw Error("'{}' object is not iterable", v.type_name());
}

// ---------------------------------------------------------------------------------------------
// Filters

std::optional<Value> apply_filter(const std::string& name, const Value& v, const Array& pos,
                                  const Object& kw) {
  const char* fn = name.c_str();
  if (name == "trim") {
    Args a(fn, pos, kw, {"chars"});
    const std::string chars = a.str(0);
    return Value(py_strip(to_str(v), true, true, a.get(0) && !a.get(0)->is_none() ? &chars : nullptr));
  }
  if (name == "tojson") {
    if (!pos.empty()) throw Error("tojson() takes keyword arguments only");
    return Value(to_json_styled(v, kw));
  }
  if (name == "length" || name == "count") {
    Args a(fn, pos, kw, {});
    return Value(length_of(v));
  }
  if (name == "upper" || name == "lower") {
    Args a(fn, pos, kw, {});
    return Value(map_case(to_str(v), name == "upper"));
  }
  if (name == "capitalize") return Value(capitalize(to_str(v)));
  if (name == "title") return Value(title(to_str(v)));
  if (name == "string") return Value(to_str(v));
  if (name == "safe") return v;
  if (name == "items") {
    Args a(fn, pos, kw, {});
    if (v.is_undefined()) return Value(Array{});
    if (!v.is_object() || v.is_namespace()) throw Error("items: expected a dict, got {}", v.type_name());
    Array out;
    for (const auto& [k, x] : v.object()) out.push_back(Value::tuple(Array{Value(k), x}));
    return Value(std::move(out));
  }
  if (name == "default" || name == "d") {
    Args a(fn, pos, kw, {"default_value", "boolean"});
    const bool boolean = a.get_or(1, Value(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return a.get_or(0, Value(""));
    return v;
  }
  if (name == "join") {
    Args a(fn, pos, kw, {"d", "attribute"});
    const std::string sep = a.str(0);
    const std::string attr = a.get(1) && !a.get(1)->is_none() ? to_str(*a.get(1)) : "";
    std::string out;
    bool first = true;
    for (const Value& x : iterate(v)) {
      out += (first ? "" : sep) + to_str(attr.empty() ? x : attribute_of(x, attr));
      first = false;
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    Args a(fn, pos, kw, {});
    const Array items = iterate(v);
    if (items.empty()) return Value::undefined(fmt::format("{} of an empty sequence", name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    Args a(fn, pos, kw, {});
    return Value(iterate(v));
  }
  if (name == "reverse") {
    Args a(fn, pos, kw, {});
    if (v.is_string()) {
      auto chars = utf8_chars(v.str());
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    Array items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "replace") {
    Args a(fn, pos, kw, {"old", "new", "count"}, 2);
    return Value(py_replace(to_str(v), a.str(0), a.str(1), a.integer(2, -1)));
  }
  if (name == "int" || name == "float") {
    Args a(fn, pos, kw, {"default"});
    const Value dflt = a.get_or(0, name == "int" ? Value(0) : Value(0.0));
    if (v.is_number()) return name == "int" ? Value(v.is_float() ? int64_t(std::trunc(v.as_float())) : v.as_int()) : Value(v.as_float());
    if (!v.is_string()) return dflt;
    const std::string s = py_strip(v.str(), true, true);
    try {
      size_t used = 0;
      if (name == "int") {
        const int64_t i = std::stoll(s, &used);
        if (used == s.size()) return Value(i);
        const double d = std::stod(s, &used);  // Jinja's int filter accepts "3.7"
        if (used == s.size()) return Value(int64_t(std::trunc(d)));
      } else {
        const double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      }
    } catch (const std::exception&) {
    }
    return dflt;
  }
  if (name == "abs") {
    if (!v.is_number()) throw Error("bad operand type for abs(): '{}'", v.type_name());
    return v.is_float() ? Value(std::fabs(v.as_float())) : Value(int64_t(std::llabs(v.as_int())));
  }
  if (name == "select" || name == "reject") return select_items(v, "", pos, name == "select", fn);
  if (name == "selectattr" || name == "rejectattr") {
    if (pos.empty()) throw Error("{}() missing the attribute name", name);
    const Array rest(pos.begin() + 1, pos.end());
    return select_items(v, require_string(pos[0], fn), rest, name == "selectattr", fn);
  }
  if (name == "map") {
    Array out;
    if (const Value* attr = [&]() -> const Value* {
          for (const auto& [k, x] : kw) if (k == "attribute") return &x;
          return nullptr;
        }()) {
      const Value* dflt = nullptr;
      for (const auto& [k, x] : kw) {
        if (k == "default") dflt = &x;
        else if (k != "attribute") throw Error("map() got an unexpected keyword argument '{}'", k);
      }
      for (const Value& item : iterate(v)) {
        Value x = attribute_of(item, to_str(*attr));
        out.push_back(x.is_undefined() && dflt ? *dflt : x);
      }
      return Value(std::move(out));
    }
    if (pos.empty()) throw Error("map() needs a filter name or attribute=");
    const std::string filter = require_string(pos[0], fn);
    const Array rest(pos.begin() + 1, pos.end());
    for (const Value& item : iterate(v)) {
      auto r = apply_filter(filter, item, rest, kw);
      if (!r) throw Error("map: unsupported filter '{}'", filter);
      out.push_back(*r);
    }
    return Value(std::move(out));
  }
  if (name == "unique") {
    Array out;
    for (const Value& x : iterate(v))
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return values_equal(x, y); }))
        out.push_back(x);
    return Value(std::move(out));
  }
  if (name == "sort") {
    Args a(fn, pos, kw, {"reverse", "case_sensitive", "attribute"});
    const bool reverse = a.get_or(0, Value(false)).truthy();
    const bool case_sensitive = a.get_or(1, Value(false)).truthy();
    const std::string attr = a.get(2) && !a.get(2)->is_none() ? to_str(*a.get(2)) : "";
    Array items = iterate(v);
    auto key = [&](const Value& x) {
      Value k = attr.empty() ? x : attribute_of(x, attr);
      return (!case_sensitive && k.is_string()) ? Value(map_case(k.str(), false)) : k;
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      const int c = compare_values(key(x), key(y));
      return reverse ? c > 0 : c < 0;
    });
    return Value(std::move(items));
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Tests

std::optional<bool> apply_test(const std::string& name, const Value& v, const Array& args) {
  auto arity = [&](size_t n) {
    if (args.size() != n) throw Error("test '{}' takes {} argument(s), {} given", name, n, args.size());
  };
  if (name == "defined") return arity(0), !v.is_undefined();
  if (name == "undefined") return arity(0), v.is_undefined();
  if (name == "none") return arity(0), v.is_none();
  if (name == "true") return arity(0), v.is_bool() && v.as_bool();
  if (name == "false") return arity(0), v.is_bool() && !v.as_bool();
  if (name == "boolean") return arity(0), v.is_bool();
  if (name == "string") return arity(0), v.is_string();
  if (name == "number") return arity(0), v.is_number();
  if (name == "integer") return arity(0), v.is_int();
  if (name == "float") return arity(0), v.is_float();
  if (name == "mapping") return arity(0), v.is_object() && !v.is_namespace();
  if (name == "iterable" || name == "sequence")
    return arity(0), v.is_string() || v.is_array() || (v.is_object() && !v.is_namespace()) || v.is_undefined();
  if (name == "callable") return arity(0), v.is_function();
  if (name == "lower" || name == "upper") {
    arity(0);
    const std::string s = to_str(v);
    return s == map_case(s, name == "upper") && s != map_case(s, name != "upper");
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    arity(name == "divisibleby" ? 1 : 0);
    if (!v.is_int() && !v.is_bool()) throw Error("test '{}' needs an integer, got {}", name, v.type_name());
    const int64_t d = name == "divisibleby" ? args[0].as_int() : 2;
    if (d == 0) throw Error("divisibleby(0)");
    const int64_t r = ((v.as_int() % d) + d) % d;
    return name == "odd" ? r == 1 : r == 0;
  }
  if (name == "sameas") {
    arity(1);
    const Value& o = args[0];
    if (v.is_none() || o.is_none() || v.is_bool() || o.is_bool())
      return v.kind() == o.kind() && (!v.is_bool() || v.as_bool() == o.as_bool());
    return v.kind() == o.kind() && values_equal(v, o) && (v.is_int() || v.is_string());
  }
  if (name == "in") return arity(1), contains(args[0], v);
  static const std::pair<const char*, const char*> kCompare[] = {
      {"eq", "=="}, {"equalto", "=="}, {"==", "=="}, {"ne", "!="}, {"!=", "!="}, {"lt", "<"},
      {"lessthan", "<"}, {"<", "<"}, {"le", "<="}, {"<=", "<="}, {"gt", ">"},
      {"greaterthan", ">"}, {">", ">"}, {"ge", ">="}, {">=", ">="}};
  for (const auto& [n, op] : kCompare) {
    if (name != n) continue;
    arity(1);
    const std::string o = op;
    if (o == "==") return values_equal(v, args[0]);
    if (o == "!=") return !values_equal(v, args[0]);
    const int c = compare_values(v, args[0]);
    return o == "<" ? c < 0 : o == "<=" ? c <= 0 : o == ">" ? c > 0 : c >= 0;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Methods of str and dict

std::optional<Value> call_method(const Value& self, const std::string& name, const Array& pos,
                                 const Object& kw) {
  const std::string fn = std::string(self.type_name()) + "." + name;
  if (self.is_string()) {
    const std::string& s = self.str();
    if (name == "startswith" || name == "endswith") {
      Args a(fn.c_str(), pos, kw, {"prefix"}, 1);
      return Value(matches_affix(s, *a.get(0), name == "startswith", fn.c_str()));
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      Args a(fn.c_str(), pos, kw, {"chars"});
      const std::string chars = a.str(0);
      const bool given = a.get(0) && !a.get(0)->is_none();
      return Value(py_strip(s, name != "rstrip", name != "lstrip", given ? &chars : nullptr));
    }
    if (name == "split") {
      Args a(fn.c_str(), pos, kw, {"sep", "maxsplit"});
      const std::string sep = a.str(0);
      const bool given = a.get(0) && !a.get(0)->is_none();
      Array out;
      for (auto& p : py_split(s, given ? &sep : nullptr, a.integer(1, -1))) out.emplace_back(std::move(p));
      return Value(std::move(out));
    }
    if (name == "upper" || name == "lower") {
      Args a(fn.c_str(), pos, kw, {});
      return Value(map_case(s, name == "upper"));
    }
    if (name == "capitalize") return Value(capitalize(s));
    if (name == "title") return Value(title(s));
    if (name == "replace") {
      Args a(fn.c_str(), pos, kw, {"old", "new", "count"}, 2);
      return Value(py_replace(s, a.str(0), a.str(1), a.integer(2, -1)));
    }
    if (name == "find") {
      Args a(fn.c_str(), pos, kw, {"sub"}, 1);
      const size_t p = s.find(a.str(0));
      return Value(p == std::string::npos ? int64_t(-1) : int64_t(utf8_chars(s.substr(0, p)).size()));
    }
    if (name == "join") {
      Args a(fn.c_str(), pos, kw, {"iterable"}, 1);
      std::string out;
      bool first = true;
      for (const Value& x : iterate(*a.get(0))) {
        out += (first ? "" : s) + require_string(x, fn.c_str());
        first = false;
      }
      return Value(std::move(out));
    }
    return std::nullopt;
  }
  if (self.is_object() && !self.is_namespace()) {
    if (name == "get") {
      Args a(fn.c_str(), pos, kw, {"key", "default"}, 1);
      const Value& key = *a.get(0);
      const Value* f = key.is_string() ? self.find(key.str()) : nullptr;
      return f ? *f : a.get_or(1, Value::none());
    }
    if (name == "items" || name == "keys" || name == "values") {
      Args a(fn.c_str(), pos, kw, {});
      Array out;
      for (const auto& [k, x] : self.object())
        out.push_back(name == "items" ? Value::tuple(Array{Value(k), x}) : name == "keys" ? Value(k) : x);
      return Value(std::move(out));
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Globals

const Object& builtin_globals() {
  static const Object globals = [] {
    Object g;
    g.emplace_back("raise_exception", Value::function("raise_exception", [](const Array& pos, const Object& kw) -> Value {
      Args a("raise_exception", pos, kw, {"message"});
      throw Error("the template raised an error: {}", to_str(a.get_or(0, Value(""))));
    }));
    g.emplace_back("strftime_now", Value::function("strftime_now", [](const Array& pos, const Object& kw) {
      Args a("strftime_now", pos, kw, {"format"}, 1);
      const std::string format = a.str(0);
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
      return Value(std::string(buf, n));
    }));
    g.emplace_back("namespace", Value::function("namespace", [](const Array& pos, const Object& kw) {
      Object o;
      if (pos.size() > 1) throw Error("namespace() takes at most one positional argument");
      if (!pos.empty()) {
        if (!pos[0].is_object()) throw Error("namespace(): the positional argument must be a dict");
        o = pos[0].object();
      }
      for (const auto& kv : kw) o.push_back(kv);
      return Value::namespace_object(std::move(o));
    }));
    g.emplace_back("dict", Value::function("dict", [](const Array& pos, const Object& kw) {
      if (!pos.empty()) throw Error("dict() takes keyword arguments only");
      return Value(kw);
    }));
    g.emplace_back("range", Value::function("range", [](const Array& pos, const Object& kw) {
      if (!kw.empty() || pos.empty() || pos.size() > 3) throw Error("range() takes 1 to 3 integers");
      for (const Value& p : pos)
        if (!p.is_int()) throw Error("range(): arguments must be integers");
      const int64_t start = pos.size() > 1 ? pos[0].as_int() : 0;
      const int64_t stop = pos.size() > 1 ? pos[1].as_int() : pos[0].as_int();
      const int64_t step = pos.size() > 2 ? pos[2].as_int() : 1;
      if (step == 0) throw Error("range() step must not be zero");
      if ((stop - start) / step > 1000000) throw Error("range() too large");
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
      return Value(std::move(out));
    }));
    return g;
  }();
  return globals;
}

}  // namespace distill::jinja
