// Jinja values: Python semantics for str(), repr() and json.dumps().
#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "tokenizer/jinja.h"
#include "tokenizer/jinja_ast.h"

namespace distill::jinja {

// ---------------------------------------------------------------------------------------------
// Value

Value Value::undefined(std::string what) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(what));
  return v;
}
Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b) {}
Value::Value(int i) : kind_(Kind::kInt), i_(i) {}
Value::Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double f) : kind_(Kind::kFloat), f_(f) {}
Value::Value(std::string s)
    : kind_(Kind::kString), s_(std::make_shared<const std::string>(std::move(s))) {}
Value::Value(const char* s) : Value(std::string(s)) {}
Value::Value(Array a) : kind_(Kind::kArray), a_(std::make_shared<const Array>(std::move(a))) {}
Value::Value(Object o) : kind_(Kind::kObject), o_(std::make_shared<Object>(std::move(o))) {}

Value Value::tuple(Array a) {
  Value v(std::move(a));
  v.tuple_ = true;
  return v;
}

Value Value::namespace_object(Object o) {
  Value v(std::move(o));
  v.namespace_ = true;
  return v;
}

Value Value::function(std::string name, decltype(Function::call) call) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.fn_ = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(int64_t(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& x : j) a.push_back(from_json(x));
      return Value(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      o.reserve(j.size());
      for (const auto& [k, x] : j.items()) o.emplace_back(k, from_json(x));
      return Value(std::move(o));
    }
    default: throw Error("jinja: a binary JSON value cannot be a template variable");
  }
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& [k, v] : *o_)
    if (k == key) return &v;
  return nullptr;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0;
    case Kind::kString: return !s_->empty();
    case Kind::kArray: return !a_->empty();
    case Kind::kObject: return namespace_ || !o_->empty();
    case Kind::kFunction: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kArray: return "list";
    case Kind::kObject: return namespace_ ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// str(), repr(), json.dumps()

namespace {

// Python's float repr: the shortest digits that round-trip, positional for exponents -4..15.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  const int point = exp + 1;  // digits before the decimal point
  if (exp >= -4 && exp < 16) {
    if (point <= 0) return sign + "0." + std::string(-point, '0') + digits;
    if (point >= int(digits.size())) return sign + digits + std::string(point - digits.size(), '0') + ".0";
    return sign + digits.substr(0, point) + "." + digits.substr(point);
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  return sign + mant + fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
}

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const char q = has_single && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == q) out += std::string("\\") + char(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += char(c);
  }
  return out + q;
}

struct JsonStyle {
  int indent = -1;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size(); i++) {
    const unsigned char c = s[i];
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else if (c >= 0x80 && ensure_ascii) {
          const int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
          uint32_t cp = c & (0x7F >> n);
          for (int k = 1; k < n && i + 1 < s.size(); k++) cp = (cp << 6) | (s[++i] & 0x3F);
          if (cp >= 0x10000) {
            cp -= 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", cp);
          }
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

void json_dump(std::string& out, const Value& v, const JsonStyle& st, int depth) {
  auto newline = [&](int d) {
    if (st.indent < 0) return;
    out += '\n';
    out.append(size_t(st.indent) * size_t(d), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone: out += "null"; return;
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return;
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case Value::Kind::kString: json_string(out, v.str(), st.ensure_ascii); return;
    case Value::Kind::kArray: {
      if (v.array().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.array().size(); i++) {
        if (i > 0) out += st.item_sep;
        newline(depth + 1);
        json_dump(out, v.array()[i], st, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kObject: {
      if (v.is_namespace()) break;
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.object()) items.push_back(&kv);
      if (st.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      if (items.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t i = 0; i < items.size(); i++) {
        if (i > 0) out += st.item_sep;
        newline(depth + 1);
        json_string(out, items[i]->first, st.ensure_ascii);
        out += st.key_sep;
        json_dump(out, items[i]->second, st, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: break;
  }
  throw Error("Object of type {} is not JSON serializable", v.type_name());
}

}  // namespace

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return "";
    case Value::Kind::kString: return v.str();
    default: return repr(v);
  }
}

std::string repr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return "";
    case Value::Kind::kNone: return "None";
    case Value::Kind::kBool: return v.as_bool() ? "True" : "False";
    case Value::Kind::kInt: return std::to_string(v.as_int());
    case Value::Kind::kFloat: return float_repr(v.as_float());
    case Value::Kind::kString: return string_repr(v.str());
    case Value::Kind::kArray: {
      std::string s = v.is_tuple() ? "(" : "[";
      for (size_t i = 0; i < v.array().size(); i++) s += (i ? ", " : "") + repr(v.array()[i]);
      if (v.is_tuple()) return s + (v.array().size() == 1 ? ",)" : ")");
      return s + "]";
    }
    case Value::Kind::kObject: {
      std::string s = v.is_namespace() ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, x] : v.object()) {
        s += (first ? "" : ", ") + string_repr(k) + ": " + repr(x);
        first = false;
      }
      return s + (v.is_namespace() ? "}>" : "}");
    }
    case Value::Kind::kFunction: return "<function " + v.func().name + ">";
  }
  return "";
}

std::string to_json(const Value& v, int indent) {
  JsonStyle st;
  st.indent = indent;
  if (indent >= 0) st.item_sep.assign(1, ',');
  std::string out;
  json_dump(out, v, st, 0);
  return out;
}

std::string to_json_styled(const Value& v, const Object& kwargs) {
  JsonStyle st;
  for (const auto& [k, x] : kwargs) {
    if (k == "indent") {
      st.indent = x.is_none() ? -1 : int(x.as_int());
      if (!x.is_none() && !x.is_int()) throw Error("tojson: indent must be an integer");
      if (st.indent >= 0) st.item_sep.assign(1, ',');  // not = ",": GCC 12 -Wrestrict false positive
    } else if (k == "sort_keys") {
      st.sort_keys = x.truthy();
    } else if (k == "ensure_ascii") {
      st.ensure_ascii = x.truthy();
    } else if (k != "separators") {
      throw Error("tojson: unexpected keyword argument '{}'", k);
    }
  }
  for (const auto& [k, sep] : kwargs) {
    if (k != "separators" || sep.is_none()) continue;
    if (!sep.is_array() || sep.array().size() != 2 || !sep.array()[0].is_string() ||
        !sep.array()[1].is_string())
      throw Error("tojson: separators must be a pair of strings");
    st.item_sep = sep.array()[0].str();
    st.key_sep = sep.array()[1].str();
  }
  std::string out;
  json_dump(out, v, st, 0);
  return out;
}

}  // namespace distill::jinja
