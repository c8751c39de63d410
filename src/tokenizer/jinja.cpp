// The evaluator of parsed Jinja templates (tokenizer/jinja_parse.cpp parses them).
#include "tokenizer/jinja.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"

namespace distill::jinja {

// ---------------------------------------------------------------------------------------------
// Evaluator

struct Template::Impl {
  std::string source;
  std::string origin;
  Body body;
};

namespace {

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const Template::Impl& t, const Object& vars) : t_(t) {
    scopes_.emplace_back();
    for (const auto& [k, v] : builtin_globals()) scopes_[0][k] = v;
    for (const auto& [k, v] : vars) scopes_[0][k] = v;
  }

  std::string run() {
    std::string out;
    exec(t_.body, out);
    return out;
  }

 private:
  [[noreturn]] void fail(size_t pos, const std::string& msg) const {
    fail_at(t_.source, t_.origin, pos, msg);
  }

  // Runs a built-in, giving its errors the template position.
  template <typename F>
  auto guarded(size_t pos, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const Error& e) {
      fail(pos, e.what());
    }
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  void assign(const std::vector<std::string>& targets, const Value& v, size_t pos) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = v;
      return;
    }
    if (!v.is_array()) fail(pos, fmt::format("cannot unpack a {} into {} names", v.type_name(), targets.size()));
    if (v.array().size() != targets.size())
      fail(pos, fmt::format("cannot unpack {} values into {} names", v.array().size(), targets.size()));
    for (size_t i = 0; i < targets.size(); i++) scopes_.back()[targets[i]] = v.array()[i];
  }

  Flow exec(const Body& body, std::string& out) {
    for (const StmtPtr& sp : body) {
      const Stmt& s = *sp;
      switch (s.kind) {
        case Stmt::Kind::kText: out += s.text; break;
        case Stmt::Kind::kOutput: out += to_str(eval(*s.exprs[0])); break;
        case Stmt::Kind::kIf: {
          size_t i = 0;
          while (i < s.exprs.size() && !eval(*s.exprs[i]).truthy()) i++;
          if (i < s.bodies.size()) {
            const Flow f = exec(s.bodies[i], out);
            if (f != Flow::kNormal) return f;
          }
          break;
        }
        case Stmt::Kind::kFor: exec_for(s, out); break;
        case Stmt::Kind::kSet: {
          const Value v = eval(*s.exprs[0]);
          if (s.attr.empty()) {
            assign(s.targets, v, s.pos);
            break;
          }
          const Value ns = lookup(s.targets[0]);
          if (!ns.is_namespace())
            fail(s.pos, fmt::format("cannot assign attribute '{}' on '{}': not a namespace()", s.attr, s.targets[0]));
          Object& o = ns.mutable_object();
          auto it = std::find_if(o.begin(), o.end(), [&](auto& kv) { return kv.first == s.attr; });
          if (it != o.end()) it->second = v;
          else o.emplace_back(s.attr, v);
          break;
        }
        case Stmt::Kind::kSetBlock: {
          std::string text;
          exec(s.bodies[0], text);
          assign(s.targets, Value(std::move(text)), s.pos);
          break;
        }
        case Stmt::Kind::kBreak: return Flow::kBreak;
        case Stmt::Kind::kContinue: return Flow::kContinue;
        case Stmt::Kind::kBlock: {
          const Flow f = exec(s.bodies[0], out);
          if (f != Flow::kNormal) return f;
          break;
        }
      }
    }
    return Flow::kNormal;
  }

  void exec_for(const Stmt& s, std::string& out) {
    const Value seq = eval(*s.exprs[0]);
    Array items = guarded(s.exprs[0]->pos, [&] { return iterate(seq); });
    if (s.has_filter) {
      Array kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        assign(s.targets, item, s.pos);
        const bool keep = eval(*s.exprs[1]).truthy();
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (s.bodies.size() > 1) {
        scopes_.emplace_back();
        exec(s.bodies[1], out);
        scopes_.pop_back();
      }
      return;
    }
    const int64_t n = int64_t(items.size());
    for (int64_t i = 0; i < n; i++) {
      // Each iteration has its own scope: a `set` in the body is gone at the next iteration
      // (as Jinja; state that must survive goes through namespace()).
      scopes_.emplace_back();
      assign(s.targets, items[i], s.pos);
      Object loop = {{"index", Value(i + 1)}, {"index0", Value(i)}, {"revindex", Value(n - i)},
                     {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)},
                     {"last", Value(i == n - 1)}, {"length", Value(n)}, {"depth", Value(1)},
                     {"depth0", Value(0)},
                     {"previtem", i > 0 ? items[i - 1] : Value::undefined("there is no previous item")},
                     {"nextitem", i + 1 < n ? items[i + 1] : Value::undefined("there is no next item")}};
      scopes_.back()["loop"] = Value(std::move(loop));
      const Flow f = exec(s.bodies[0], out);
      scopes_.pop_back();
      if (f == Flow::kBreak) break;
    }
  }

  Value get_attr(const Value& obj, const std::string& name, size_t pos) {
    if (obj.is_undefined()) fail(pos, obj.str());
    if (obj.is_object()) {
      if (const Value* v = obj.find(name)) return *v;
      return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
    }
    return Value::undefined(fmt::format("'{}' object has no attribute '{}'", obj.type_name(), name));
  }

  Value get_item(const Value& obj, const Value& key, size_t pos) {
    if (obj.is_undefined()) fail(pos, obj.str());
    if (key.is_int() || key.is_bool()) {
      int64_t i = key.as_int();
      if (obj.is_array() || obj.is_string()) {
        std::vector<std::string> chars;
        if (obj.is_string()) chars = utf8_chars(obj.str());
        const int64_t n = obj.is_array() ? int64_t(obj.array().size()) : int64_t(chars.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined(fmt::format("{} index {} out of range", obj.type_name(), key.as_int()));
        return obj.is_array() ? obj.array()[size_t(i)] : Value(chars[size_t(i)]);
      }
    }
    if (key.is_string()) return get_attr(obj, key.str(), pos);
    return Value::undefined(fmt::format("'{}' object has no item {}", obj.type_name(), repr(key)));
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    if (obj.is_undefined()) fail(e.pos, obj.str());
    int64_t bounds[3];
    bool given[3];
    for (int k = 0; k < 3; k++) {
      given[k] = false;
      if (!e.args[k + 1]) continue;
      const Value b = eval(*e.args[k + 1]);
      if (b.is_none()) continue;
      if (!b.is_int() && !b.is_bool()) fail(e.args[k + 1]->pos, "slice indices must be integers or None");
      bounds[k] = b.as_int();
      given[k] = true;
    }
    const int64_t step = given[2] ? bounds[2] : 1;
    if (step == 0) fail(e.pos, "slice step cannot be zero");
    std::vector<std::string> chars;
    if (obj.is_string()) chars = utf8_chars(obj.str());
    else if (!obj.is_array()) fail(e.pos, fmt::format("'{}' object is not subscriptable by a slice", obj.type_name()));
    const int64_t n = obj.is_array() ? int64_t(obj.array().size()) : int64_t(chars.size());
    // Python's slice.indices().
    auto clamp = [&](int64_t v, bool has, int64_t dflt) {
      if (!has) return dflt;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
    Array a;
    std::string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (obj.is_array()) a.push_back(obj.array()[size_t(i)]);
      else s += chars[size_t(i)];
    }
    if (obj.is_tuple()) return Value::tuple(std::move(a));
    return obj.is_array() ? Value(std::move(a)) : Value(std::move(s));
  }

  void require_defined(const Value& v, size_t pos) {
    if (v.is_undefined()) fail(pos, v.str());
  }

  Value arithmetic(const std::string& op, const Value& a, const Value& b, size_t pos) {
    require_defined(a, pos);
    require_defined(b, pos);
    auto bad = [&]() -> Value {
      fail(pos, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
    };
    const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
    const bool nums = a.is_number() && b.is_number();
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_array() && b.is_array() && a.is_tuple() == b.is_tuple()) {
        Array r = a.array();
        r.insert(r.end(), b.array().begin(), b.array().end());
        return a.is_tuple() ? Value::tuple(std::move(r)) : Value(std::move(r));
      }
      if (ints) return Value(a.as_int() + b.as_int());
      if (nums) return Value(a.as_float() + b.as_float());
      return bad();
    }
    if (op == "-") {
      if (ints) return Value(a.as_int() - b.as_int());
      if (nums) return Value(a.as_float() - b.as_float());
      return bad();
    }
    if (op == "*") {
      if (ints) return Value(a.as_int() * b.as_int());
      if (nums) return Value(a.as_float() * b.as_float());
      const Value* seq = a.is_string() || a.is_array() ? &a : &b;
      const Value* times = seq == &a ? &b : &a;
      if (!(seq->is_string() || seq->is_array()) || !(times->is_int() || times->is_bool())) return bad();
      std::string s;
      Array r;
      for (int64_t i = 0; i < times->as_int(); i++) {
        if (seq->is_string()) s += seq->str();
        else r.insert(r.end(), seq->array().begin(), seq->array().end());
      }
      return seq->is_string() ? Value(std::move(s)) : Value(std::move(r));
    }
    if (!nums) {
      if (op == "%" && a.is_string()) fail(pos, "unsupported construct: printf-style string formatting with '%'");
      return bad();
    }
    if (op == "/") {
      if (b.as_float() == 0) fail(pos, "division by zero");
      return Value(a.as_float() / b.as_float());
    }
    if (op == "//" || op == "%") {
      if (b.as_float() == 0) fail(pos, op == "%" ? "modulo by zero" : "division by zero");
      if (ints) {
        const int64_t x = a.as_int(), y = b.as_int();
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) q--, r += y;  // Python floors
        return op == "//" ? Value(q) : Value(r);
      }
      const double x = a.as_float(), y = b.as_float();
      if (op == "//") return Value(std::floor(x / y));
      double r = std::fmod(x, y);
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      return Value(r);
    }
    if (op == "**") {
      if (ints && b.as_int() >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < b.as_int(); i++) r *= a.as_int();
        return Value(r);
      }
      return Value(std::pow(a.as_float(), b.as_float()));
    }
    return bad();
  }

  bool compare(const std::string& op, const Value& a, const Value& b, size_t pos) {
    if (op == "==") return values_equal(a, b);
    if (op == "!=") return !values_equal(a, b);
    if (op == "in" || op == "notin") {
      require_defined(a, pos);
      const bool r = guarded(pos, [&] { return contains(b, a); });
      return op == "in" ? r : !r;
    }
    require_defined(a, pos);
    require_defined(b, pos);
    const int c = guarded(pos, [&] { return compare_values(a, b); });
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  void eval_args(const Expr& e, Array& args, Object& kwargs) {
    for (size_t i = 1; i < e.args.size(); i++) args.push_back(eval(*e.args[i]));
    for (const auto& [k, x] : e.kwargs) kwargs.emplace_back(k, eval(*x));
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    Array args;
    Object kwargs;
    Value f;
    if (callee.kind == Expr::Kind::kGetAttr) {
      const Value self = eval(*callee.args[0]);
      eval_args(e, args, kwargs);
      if (self.is_string() || self.is_array() || (self.is_object() && !self.is_namespace())) {
        auto r = guarded(e.pos, [&] { return call_method(self, callee.name, args, kwargs); });
        if (r) return *r;
        if (!self.is_object() || !self.find(callee.name))
          fail(callee.pos, fmt::format("unsupported construct: method '{}.{}()'", self.type_name(), callee.name));
      }
      f = get_attr(self, callee.name, callee.pos);
    } else {
      f = eval(callee);
      eval_args(e, args, kwargs);
    }
    if (f.is_undefined()) fail(callee.pos, f.str());
    if (!f.is_function()) fail(callee.pos, fmt::format("'{}' object is not callable", f.type_name()));
    return guarded(e.pos, [&] { return f.func().call(args, kwargs); });
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.value;
      case Expr::Kind::kName: return lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        Array a;
        for (const auto& x : e.args) a.push_back(eval(*x));
        return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(a)) : Value(std::move(a));
      }
      case Expr::Kind::kDict: {
        Object o;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          const Value k = eval(*e.args[i]);
          if (!k.is_string()) fail(e.args[i]->pos, "unsupported construct: a dict key that is not a string");
          Value v = eval(*e.args[i + 1]);
          auto it = std::find_if(o.begin(), o.end(), [&](auto& kv) { return kv.first == k.str(); });
          if (it != o.end()) it->second = std::move(v);
          else o.emplace_back(k.str(), std::move(v));
        }
        return Value(std::move(o));
      }
      case Expr::Kind::kGetAttr: return get_attr(eval(*e.args[0]), e.name, e.pos);
      case Expr::Kind::kGetItem: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.pos);
      case Expr::Kind::kSlice: return slice(e);
      case Expr::Kind::kCall: return call(e);
      case Expr::Kind::kFilter: {
        const Value v = eval(*e.args[0]);
        Array args;
        Object kwargs;
        eval_args(e, args, kwargs);
        auto r = guarded(e.pos, [&] { return apply_filter(e.name, v, args, kwargs); });
        if (!r) fail(e.pos, fmt::format("unsupported construct: filter '{}'", e.name));
        return *r;
      }
      case Expr::Kind::kTest: {
        const Value v = eval(*e.args[0]);
        Array args;
        Object kwargs;
        eval_args(e, args, kwargs);
        if (!kwargs.empty()) fail(e.pos, fmt::format("test '{}' takes no keyword arguments", e.name));
        auto r = guarded(e.pos, [&] { return apply_test(e.name, v, args); });
        if (!r) fail(e.pos, fmt::format("unsupported construct: test '{}'", e.name));
        return Value(*r != e.negated);
      }
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        const Value v = eval(*e.args[0]);
        require_defined(v, e.pos);
        if (!v.is_number()) fail(e.pos, fmt::format("bad operand type for unary {}: '{}'", e.kind == Expr::Kind::kNeg ? '-' : '+', v.type_name()));
        if (e.kind == Expr::Kind::kPos) return v.is_float() ? v : Value(v.as_int());
        return v.is_float() ? Value(-v.as_float()) : Value(-v.as_int());
      }
      case Expr::Kind::kNot: return Value(!eval(*e.args[0]).truthy());
      case Expr::Kind::kAnd: {
        Value a = eval(*e.args[0]);
        return a.truthy() ? eval(*e.args[1]) : a;
      }
      case Expr::Kind::kOr: {
        Value a = eval(*e.args[0]);
        return a.truthy() ? a : eval(*e.args[1]);
      }
      case Expr::Kind::kBinary: return arithmetic(e.name, eval(*e.args[0]), eval(*e.args[1]), e.pos);
      case Expr::Kind::kConcat: {
        std::string s;
        for (const auto& x : e.args) s += to_str(eval(*x));
        return Value(std::move(s));
      }
      case Expr::Kind::kCompare: {
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.ops.size(); i++) {
          Value right = eval(*e.args[i + 1]);
          if (!compare(e.ops[i], left, right, e.args[i + 1]->pos)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::kCond:
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("the inline if has no else");
    }
    fail(e.pos, "internal error: unknown expression");
  }

  const Template::Impl& t_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
};

}  // namespace

Template::Template(std::string source, std::string origin) : impl_(std::make_unique<Impl>()) {
  // Jinja reads \r\n and \r as \n, and drops one trailing newline (keep_trailing_newline=False).
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); i++) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') i++;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  impl_->source = std::move(src);
  impl_->origin = std::move(origin);
  impl_->body = parse_template(impl_->source, impl_->origin);
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Object& variables) const {
  return Renderer(*impl_, variables).run();
}

}  // namespace distill::jinja
