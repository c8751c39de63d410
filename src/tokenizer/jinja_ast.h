// The parsed form of a Jinja template (tokenizer/jinja_parse.cpp builds it, tokenizer/jinja.cpp
// runs it) and the built-in filters, tests and methods (tokenizer/jinja_builtins.cpp). Internal to
// the jinja files.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja.h"

namespace distill::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // args: items
    kTuple,    // args: items (a tuple is a list at run time)
    kDict,     // args: key0, value0, key1, value1, ...
    kGetAttr,  // args[0].name
    kGetItem,  // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]], null where omitted
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs)
    kTest,     // args[0] is [not] name(args[1..])
    kNeg,      // -args[0]
    kPos,      // +args[0]
    kNot,      // not args[0]
    kBinary,   // args[0] name args[1]; name in + - * / // % **
    kAnd,      // args[0] and args[1]
    kOr,       // args[0] or args[1]
    kConcat,   // args[0] ~ args[1] ~ ...
    kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ...; ops: == != < <= > >= in notin
    kCond,     // args[0] if args[1] else args[2] (args[2] null: undefined)
  };
  Kind kind;
  size_t pos;  // offset in the template source
  std::string name;
  Value value;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;  // kTest: `is not`
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ exprs[0] }}
    kIf,        // if exprs[i]: bodies[i]; bodies.size() == exprs.size() + 1 when there is an else
    kFor,       // for targets in exprs[0] [if exprs[1]]: bodies[0] else bodies[1]
    kSet,       // targets (or targets[0].attr) = exprs[0]
    kSetBlock,  // targets[0] = rendered bodies[0]
    kBreak,
    kContinue,
    kBlock,     // bodies[0], rendered as is ({% generation %})
  };
  Kind kind;
  size_t pos;
  std::string text;
  std::vector<ExprPtr> exprs;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  bool has_filter = false;  // kFor: exprs[1] is the loop filter
};

// Parses a template source (newlines already normalized to \n) into its statements.
Body parse_template(const std::string& source, const std::string& origin);

// Throws distill::Error("<origin>:<line>:<col>: <message>") for offset `pos` of `source`.
[[noreturn]] void fail_at(const std::string& source, const std::string& origin, size_t pos,
                          const std::string& message);

// Built-ins. Each returns nullopt when it has no such name; bad arguments throw distill::Error
// (without a position: the caller adds it).
std::optional<Value> apply_filter(const std::string& name, const Value& v, const Array& args,
                                  const Object& kwargs);
std::optional<bool> apply_test(const std::string& name, const Value& v, const Array& args);
std::optional<Value> call_method(const Value& self, const std::string& name, const Array& args,
                                 const Object& kwargs);
// The global functions every render sees (raise_exception, namespace, range, strftime_now, ...).
const Object& builtin_globals();

// transformers' tojson: json.dumps with the keyword arguments indent, separators, sort_keys,
// ensure_ascii (default False).
std::string to_json_styled(const Value& v, const Object& kwargs);

// Python semantics shared by the evaluator and the built-ins.
bool values_equal(const Value& a, const Value& b);
// -1, 0, 1; throws for types Python cannot order.
int compare_values(const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);
// The items a for loop sees: list items, dict keys, string characters; undefined is empty.
Array iterate(const Value& v);
// Unicode code points of a UTF-8 string, each as its UTF-8 bytes (Python's str indexing).
std::vector<std::string> utf8_chars(const std::string& s);
// Python's str.isspace() characters at the ends removed (`chars` when given).
std::string py_strip(const std::string& s, bool left, bool right, const std::string* chars = nullptr);

}  // namespace distill::jinja
