// Jinja lexer and parser. The lexer applies the whitespace rules of transformers' environment
// (trim_blocks: drop the newline after a block or comment tag; lstrip_blocks: drop the spaces and
// tabs between a line start and a block or comment tag; `-` strips all whitespace on its side,
// `+` turns the rules off); the parser follows the precedence of Jinja2's parser.
#include <algorithm>
#include <cstring>
#include <string_view>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"

namespace distill::jinja {

void fail_at(const std::string& source, const std::string& origin, size_t pos,
             const std::string& message) {
  pos = std::min(pos, source.size());
  const size_t line = 1 + std::count(source.begin(), source.begin() + pos, '\n');
  const size_t line_start = source.rfind('\n', pos == 0 ? 0 : pos - 1);
  const size_t col = (pos == 0 || line_start == std::string::npos) ? pos + 1 : pos - line_start;
  throw Error("{}:{}:{}: {}", origin, line, col, message);
}

namespace {

struct Token {
  enum Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat,
              kOp, kEnd };
  Type type;
  size_t pos;
  std::string text;  // text, name, string value, operator
  int64_t i = 0;
  double f = 0;
};

// Python's str.isspace() for the ASCII range (the lexer's `\s` on template text).
bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

class Lexer {
 public:
  Lexer(const std::string& src, const std::string& origin) : src_(src), origin_(origin) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // the previous match ended a line (Jinja's lstrip condition)
    while (pos < src_.size()) {
      size_t tag = next_tag(pos);
      std::string text = src_.substr(pos, (tag == std::string::npos ? src_.size() : tag) - pos);
      if (tag == std::string::npos) {
        emit(Token::kText, pos, std::move(text));
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      const bool minus = mod == '-';
      const bool plus = mod == '+' && kind != '{';
      if (minus) {
        size_t n = text.size();
        while (n > 0 && is_space(text[n - 1])) n--;
        text.resize(n);
      } else if (!plus && kind != '{') {
        const size_t l = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((l > 0 || line_starting) && l < text.size() &&
            std::all_of(text.begin() + l, text.end(), is_space))
          text.resize(l);
      }
      emit(Token::kText, pos, std::move(text));
      size_t p = tag + 2 + ((minus || plus) ? 1 : 0);
      if (kind == '#') {
        const size_t end = src_.find("#}", p);
        if (end == std::string::npos) fail(tag, "unclosed comment: missing '#}'");
        pos = end + 2;
        line_starting = after_tag(pos, end > p && src_[end - 1] == '-', false, true);
        continue;
      }
      out_.push_back({kind == '{' ? Token::kVarBegin : Token::kBlockBegin, tag, ""});
      pos = lex_tag(tag, p, kind == '%', line_starting);
    }
    out_.push_back({Token::kEnd, src_.size(), ""});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(size_t pos, const std::string& msg) { fail_at(src_, origin_, pos, msg); }

  void emit(Token::Type t, size_t pos, std::string text) {
    if (!text.empty()) out_.push_back({t, pos, std::move(text)});
  }

  size_t next_tag(size_t pos) const {
    for (size_t p = src_.find('{', pos); p != std::string::npos; p = src_.find('{', p + 1))
      if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#'))
        return p;
    return std::string::npos;
  }

  // Consumes what a tag end takes after it; returns whether the consumed text ended a line.
  bool after_tag(size_t& pos, bool minus, bool plus, bool block) {
    if (minus) {
      const size_t start = pos;
      while (pos < src_.size() && is_space(src_[pos])) pos++;
      return pos > start && src_[pos - 1] == '\n';
    }
    if (block && !plus && pos < src_.size() && src_[pos] == '\n') {
      pos++;
      return true;
    }
    return false;
  }

  // Lexes the inside of {{ }} or {% %} starting at p; returns the offset after the tag end.
  size_t lex_tag(size_t tag, size_t p, bool block, bool& line_starting) {
    int depth = 0;  // open brackets: a `}}` inside a dict literal does not end the tag
    for (;;) {
      while (p < src_.size() && is_space(src_[p])) p++;
      if (p >= src_.size()) fail(tag, block ? "unclosed tag: missing '%}'" : "unclosed tag: missing '}}'");
      std::string_view rest(src_.data() + p, src_.size() - p);
      if (depth == 0) {
        const char* end = block ? "%}" : "}}";
        const bool minus = rest.starts_with("-") && rest.substr(1).starts_with(end);
        const bool plus = block && rest.starts_with("+") && rest.substr(1).starts_with(end);
        if (minus || plus || rest.starts_with(end)) {
          out_.push_back({block ? Token::kBlockEnd : Token::kVarEnd, p, ""});
          p += (minus || plus) ? 3 : 2;
          line_starting = after_tag(p, minus, plus, block);
          return p;
        }
      }
      const char c = src_[p];
      if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else if (c >= '0' && c <= '9') {
        p = lex_number(p);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_'))
          e++;
        out_.push_back({Token::kName, p, src_.substr(p, e - p)});
        p = e;
      } else {
        static const char* kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
        size_t n = 0;
        for (const char* op : kOps2)
          if (rest.starts_with(op)) n = 2;
        if (n == 0 && std::strchr("+-*/%~()[]{},.:|=<>", c) != nullptr) n = 1;
        if (n == 0) fail(p, fmt::format("unexpected character '{}' in a tag", c));
        if (c == '(' || c == '[' || c == '{') depth++;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
        out_.push_back({Token::kOp, p, src_.substr(p, n)});
        p += n;
      }
    }
  }

  // A Python string literal with its escapes (Jinja decodes them as Python's unicode-escape).
  size_t lex_string(size_t p) {
    const char quote = src_[p];
    std::string s;
    size_t i = p + 1;
    for (;; i++) {
      if (i >= src_.size()) fail(p, "unterminated string literal");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        s += c;
        continue;
      }
      if (++i >= src_.size()) fail(p, "unterminated string literal");
      const char e = src_[i];
      auto hex = [&](int digits) {
        if (i + digits >= src_.size()) fail(i, "truncated escape in string literal");
        uint32_t cp = 0;
        for (int k = 1; k <= digits; k++) {
          const char h = src_[i + k];
          if (!std::isxdigit(static_cast<unsigned char>(h))) fail(i, "bad escape in string literal");
          cp = cp * 16 + uint32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 32) - 'a' + 10);
        }
        i += digits;
        append_utf8(s, cp);
      };
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': s += '\\'; break;
        case '\'': s += '\''; break;
        case '"': s += '"'; break;
        case 'n': s += '\n'; break;
        case 't': s += '\t'; break;
        case 'r': s += '\r'; break;
        case 'a': s += '\a'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'v': s += '\v'; break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        case 'N': fail(i - 1, "the \\N{...} escape is not supported");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = 0;
            int k = 0;
            while (k < 3 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7') cp = cp * 8 + (src_[i++] - '0'), k++;
            i--;
            append_utf8(s, cp);
          } else {
            s += '\\';
            s += e;
          }
      }
    }
    out_.push_back({Token::kString, p, std::move(s)});
    return i + 1;
  }

  static void append_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18));
      s += char(0x80 | ((cp >> 12) & 0x3F));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  }

  size_t lex_number(size_t p) {
    auto digits = [&](size_t i) {
      while (i < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[i])) || src_[i] == '_')) i++;
      return i;
    };
    size_t e = digits(p);
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      e = digits(e + 1);
      is_float = true;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) x++;
      if (x < src_.size() && std::isdigit(static_cast<unsigned char>(src_[x]))) {
        e = digits(x);
        is_float = true;
      }
    }
    std::string text = src_.substr(p, e - p);
    std::erase(text, '_');
    Token t{is_float ? Token::kFloat : Token::kInt, p, text};
    try {
      if (is_float) t.f = std::stod(text); else t.i = std::stoll(text);
    } catch (const std::exception&) {
      fail(p, fmt::format("number literal '{}' out of range", text));
    }
    out_.push_back(std::move(t));
    return e;
  }

  const std::string& src_;
  const std::string& origin_;
  std::vector<Token> out_;
};

class Parser {
 public:
  Parser(const std::string& src, const std::string& origin, std::vector<Token> tokens)
      : src_(src), origin_(origin), t_(std::move(tokens)) {}

  Body parse() {
    std::string stop;
    return parse_body({}, stop, 0);
  }

 private:
  [[noreturn]] void fail(size_t pos, const std::string& msg) { fail_at(src_, origin_, pos, msg); }
  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).type == Token::kOp && peek(k).text == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).type == Token::kName && peek(k).text == n; }
  bool accept_op(const char* op) { return is_op(op) ? (i_++, true) : false; }
  bool accept_name(const char* n) { return is_name(n) ? (i_++, true) : false; }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(peek().pos, fmt::format("expected '{}', found {}", op, describe(peek())));
  }
  void expect_block_end() {
    if (peek().type != Token::kBlockEnd)
      fail(peek().pos, fmt::format("expected end of statement '%}}', found {}", describe(peek())));
    i_++;
  }
  std::string expect_name() {
    if (peek().type != Token::kName) fail(peek().pos, fmt::format("expected a name, found {}", describe(peek())));
    return next().text;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::kName: return "'" + t.text + "'";
      case Token::kOp: return "'" + t.text + "'";
      case Token::kString: return "a string";
      case Token::kInt: case Token::kFloat: return "a number";
      case Token::kBlockEnd: return "'%}'";
      case Token::kVarEnd: return "'}}'";
      case Token::kEnd: return "the end of the template";
      default: return "text";
    }
  }
  static ExprPtr make(Expr::Kind k, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->pos = pos;
    return e;
  }

  // Statements until a {% <stop> %} tag; `stop` receives the word that ended the body.
  Body parse_body(std::initializer_list<std::string_view> stops, std::string& stop, size_t opened) {
    Body body;
    for (;;) {
      const Token& t = peek();
      if (t.type == Token::kEnd) {
        if (stops.size() == 0) return body;
        fail(opened, fmt::format("unclosed statement: missing '{{% {} %}}'", *(stops.end() - 1)));
      }
      auto s = std::make_unique<Stmt>();
      s->pos = t.pos;
      if (t.type == Token::kText) {
        s->kind = Stmt::Kind::kText;
        s->text = next().text;
      } else if (t.type == Token::kVarBegin) {
        i_++;
        s->kind = Stmt::Kind::kOutput;
        s->exprs.push_back(parse_tuple(true));
        if (peek().type != Token::kVarEnd)
          fail(peek().pos, fmt::format("expected '}}}}', found {}", describe(peek())));
        i_++;
      } else if (t.type == Token::kBlockBegin) {
        if (peek(1).type != Token::kName) fail(peek(1).pos, "expected a statement name after '{%'");
        const std::string& word = peek(1).text;
        if (std::find(stops.begin(), stops.end(), word) != stops.end()) {
          i_ += 2;
          stop = word;
          return body;
        }
        i_ += 2;
        s = parse_statement(word, t.pos);
      } else {
        fail(t.pos, fmt::format("unexpected {}", describe(t)));
      }
      body.push_back(std::move(s));
    }
  }

  StmtPtr parse_statement(const std::string& word, size_t pos) {
    const Nest nest(*this, pos);
    auto s = std::make_unique<Stmt>();
    s->pos = pos;
    std::string stop;
    if (word == "if") {
      s->kind = Stmt::Kind::kIf;
      for (;;) {
        s->exprs.push_back(parse_tuple(false));
        expect_block_end();
        s->bodies.push_back(parse_body({"elif", "else", "endif"}, stop, pos));
        if (stop != "elif") break;
      }
      if (stop == "else") {
        expect_block_end();
        s->bodies.push_back(parse_body({"endif"}, stop, pos));
      }
      expect_block_end();
    } else if (word == "for") {
      s->kind = Stmt::Kind::kFor;
      s->targets = parse_targets();
      if (!accept_name("in")) fail(peek().pos, fmt::format("expected 'in', found {}", describe(peek())));
      s->exprs.push_back(parse_tuple(false));
      if (accept_name("if")) {
        s->exprs.push_back(parse_expression());
        s->has_filter = true;
      }
      if (is_name("recursive")) fail(peek().pos, "unsupported construct: recursive for loops");
      expect_block_end();
      loop_depth_++;
      s->bodies.push_back(parse_body({"else", "endfor"}, stop, pos));
      loop_depth_--;
      if (stop == "else") {
        expect_block_end();
        s->bodies.push_back(parse_body({"endfor"}, stop, pos));
      }
      expect_block_end();
    } else if (word == "set") {
      s->kind = Stmt::Kind::kSet;
      s->targets.push_back(expect_name());
      if (accept_op(".")) {
        s->attr = expect_name();
      } else {
        while (accept_op(",")) s->targets.push_back(expect_name());
      }
      if (accept_op("=")) {
        s->exprs.push_back(parse_tuple(true));
        expect_block_end();
      } else {
        if (s->targets.size() != 1 || !s->attr.empty())
          fail(peek().pos, fmt::format("expected '=', found {}", describe(peek())));
        if (is_op("|")) fail(peek().pos, "unsupported construct: filtered block set");
        expect_block_end();
        s->kind = Stmt::Kind::kSetBlock;
        s->bodies.push_back(parse_body({"endset"}, stop, pos));
        expect_block_end();
      }
    } else if (word == "break" || word == "continue") {
      if (loop_depth_ == 0) fail(pos, fmt::format("'{}' outside of a for loop", word));
      s->kind = word == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      expect_block_end();
    } else if (word == "generation") {
      // transformers' AssistantTracker tag: marks assistant text, renders unchanged.
      s->kind = Stmt::Kind::kBlock;
      expect_block_end();
      s->bodies.push_back(parse_body({"endgeneration"}, stop, pos));
      expect_block_end();
    } else {
      static const char* kKnown[] = {"macro", "call", "filter", "include", "import", "from",
                                     "extends", "block", "with", "raw", "autoescape", "do", "trans"};
      for (const char* k : kKnown)
        if (word == k) fail(pos, fmt::format("unsupported construct: '{{% {} %}}' statement", word));
      if (word.starts_with("end") || word == "else" || word == "elif")
        fail(pos, fmt::format("unexpected '{{% {} %}}'", word));
      fail(pos, fmt::format("unknown statement '{}'", word));
    }
    return s;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool paren = accept_op("(");
    names.push_back(expect_name());
    while (accept_op(",")) {
      if (paren && is_op(")")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  // expression [, expression ...] (a tuple when there is a comma).
  ExprPtr parse_tuple(bool with_condexpr) {
    const size_t pos = peek().pos;
    ExprPtr first = with_condexpr ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto tuple = make(Expr::Kind::kTuple, pos);
    tuple->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (!starts_expression()) break;
      tuple->args.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    return tuple;
  }

  bool starts_expression() const {
    const Token& t = peek();
    if (t.type == Token::kName || t.type == Token::kString || t.type == Token::kInt ||
        t.type == Token::kFloat)
      return true;
    return t.type == Token::kOp && (t.text == "(" || t.text == "[" || t.text == "{" ||
                                    t.text == "-" || t.text == "+");
  }

  // Nesting guard: a hostile template must not overflow the stack of the recursive descent.
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser, size_t pos) : p(parser) {
      if (++p.depth_ > 200) p.fail(pos, "expression or statement nested too deeply");
    }
    ~Nest() { p.depth_--; }
  };

  ExprPtr parse_expression() {
    const Nest nest(*this, peek().pos);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      auto c = make(Expr::Kind::kCond, next().pos);
      c->args.push_back(std::move(e));
      c->args.push_back(parse_or());
      c->args.push_back(accept_name("else") ? parse_expression() : nullptr);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Expr::Kind k, size_t pos, ExprPtr l, ExprPtr r, std::string op = "") {
    auto e = make(k, pos);
    e->name = std::move(op);
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      const size_t pos = next().pos;
      e = binary(Expr::Kind::kOr, pos, std::move(e), parse_and());
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      const size_t pos = next().pos;
      e = binary(Expr::Kind::kAnd, pos, std::move(e), parse_not());
    }
    return e;
  }
  ExprPtr parse_not() {
    const Nest nest(*this, peek().pos);
    if (is_name("not")) {
      auto e = make(Expr::Kind::kNot, next().pos);
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const size_t pos = peek().pos;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    for (;;) {
      std::string op;
      if (peek().type == Token::kOp &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
           peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        i_++;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::kCompare, pos);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      e = binary(Expr::Kind::kBinary, t.pos, std::move(e), parse_concat(), t.text);
    }
    return e;
  }
  ExprPtr parse_concat() {
    const size_t pos = peek().pos;
    ExprPtr e = parse_math2();
    if (!is_op("~")) return e;
    auto c = make(Expr::Kind::kConcat, pos);
    c->args.push_back(std::move(e));
    while (accept_op("~")) c->args.push_back(parse_math2());
    return c;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      e = binary(Expr::Kind::kBinary, t.pos, std::move(e), parse_pow(), t.text);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      const Token& t = next();
      e = binary(Expr::Kind::kBinary, t.pos, std::move(e), parse_unary(true), t.text);
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    const Nest nest(*this, peek().pos);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      e = make(t.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, t.pos);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    return with_filter ? parse_filter_expr(std::move(e)) : std::move(e);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    if (t.type == Token::kName) {
      i_++;
      auto e = make(Expr::Kind::kLiteral, t.pos);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.type == Token::kString) {
      auto e = make(Expr::Kind::kLiteral, t.pos);
      std::string s;
      while (peek().type == Token::kString) s += next().text;  // 'a' 'b' is 'ab', as Python
      e->value = Value(std::move(s));
      return e;
    }
    if (t.type == Token::kInt || t.type == Token::kFloat) {
      i_++;
      auto e = make(Expr::Kind::kLiteral, t.pos);
      e->value = t.type == Token::kInt ? Value(t.i) : Value(t.f);
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) return make(Expr::Kind::kTuple, t.pos);
      ExprPtr first = parse_expression();
      if (accept_op(")")) return first;
      auto tuple = make(Expr::Kind::kTuple, t.pos);
      tuple->args.push_back(std::move(first));
      while (accept_op(",")) {
        if (is_op(")")) break;
        tuple->args.push_back(parse_expression());
      }
      expect_op(")");
      return tuple;
    }
    if (accept_op("[")) {
      auto list = make(Expr::Kind::kList, t.pos);
      while (!is_op("]")) {
        list->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("]");
      return list;
    }
    if (accept_op("{")) {
      auto dict = make(Expr::Kind::kDict, t.pos);
      while (!is_op("}")) {
        dict->args.push_back(parse_expression());
        expect_op(":");
        dict->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("}");
      return dict;
    }
    fail(t.pos, fmt::format("expected an expression, found {}", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      if (is_op(".")) {
        const size_t pos = next().pos;
        if (peek().type == Token::kInt) {  // x.0 is x[0]
          auto idx = make(Expr::Kind::kLiteral, peek().pos);
          idx->value = Value(next().i);
          e = binary(Expr::Kind::kGetItem, pos, std::move(e), std::move(idx));
          continue;
        }
        auto g = make(Expr::Kind::kGetAttr, pos);
        g->name = expect_name();
        g->args.push_back(std::move(e));
        e = std::move(g);
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e), Expr::Kind::kCall, "");
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const size_t pos = next().pos;  // '['
    ExprPtr parts[3];
    int colons = 0;
    for (;;) {
      if (is_op("]")) break;
      if (accept_op(":")) {
        if (++colons > 2) fail(peek().pos, "a slice takes at most two ':'");
        continue;
      }
      if (parts[colons]) fail(peek().pos, "unsupported construct: tuple subscript");
      parts[colons] = parse_expression();
      if (is_op(",")) fail(peek().pos, "unsupported construct: tuple subscript");
    }
    expect_op("]");
    if (colons == 0) {
      if (!parts[0]) fail(pos, "empty subscript");
      return binary(Expr::Kind::kGetItem, pos, std::move(obj), std::move(parts[0]));
    }
    auto s = make(Expr::Kind::kSlice, pos);
    s->args.push_back(std::move(obj));
    for (auto& p : parts) s->args.push_back(std::move(p));
    return s;
  }

  // `(args, name=value)` after a callee, filter or test; args[0] is `first`.
  ExprPtr parse_call(ExprPtr first, Expr::Kind kind, std::string name) {
    auto c = make(kind, first ? first->pos : peek().pos);
    c->name = std::move(name);
    c->args.push_back(std::move(first));
    if (!accept_op("(")) return c;
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail(peek().pos, "unsupported construct: *args / **kwargs in a call");
      if (peek().type == Token::kName && is_op("=", 1)) {
        std::string key = next().text;
        i_++;
        c->kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!c->kwargs.empty()) fail(peek().pos, "positional argument after a keyword argument");
        c->args.push_back(parse_expression());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
    return c;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    for (;;) {
      if (is_op("|")) {
        i_++;
        const size_t pos = peek().pos;
        std::string name = expect_name();
        while (accept_op(".")) name += "." + expect_name();
        e = parse_call(std::move(e), Expr::Kind::kFilter, name);
        e->pos = pos;
      } else if (is_name("is")) {
        i_++;
        const bool negated = accept_name("not");
        const size_t pos = peek().pos;
        std::string name = expect_name();
        while (accept_op(".")) name += "." + expect_name();
        if (is_op("(")) {
          e = parse_call(std::move(e), Expr::Kind::kTest, name);
        } else {
          auto t = make(Expr::Kind::kTest, pos);
          t->name = name;
          t->args.push_back(std::move(e));
          const Token& n = peek();
          // `x is sameas false`: one argument without parentheses, as Jinja's parser allows.
          if ((n.type == Token::kName || n.type == Token::kString || n.type == Token::kInt ||
               n.type == Token::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
              !is_name("else") && !is_name("or") && !is_name("and"))
            t->args.push_back(parse_postfix(parse_primary()));
          e = std::move(t);
        }
        e->pos = pos;
        e->negated = negated;
      } else if (is_op("(")) {
        e = parse_call(std::move(e), Expr::Kind::kCall, "");
      } else {
        return e;
      }
    }
  }

  const std::string& src_;
  const std::string& origin_;
  std::vector<Token> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse_template(const std::string& source, const std::string& origin) {
  return Parser(source, origin, Lexer(source, origin).run()).parse();
}

}  // namespace distill::jinja
