#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <atomic>
#include <optional>
#include <utility>

#include "core/error.h"
#include "tokenizer/unicode.h"
#include "tokenizer/unicode_classes.h"

namespace distill {
namespace {

std::atomic<RegexUnicode> g_default_unicode{RegexUnicode::kUcd};

// Oniguruma's \s (Unicode White_Space): separators Z*, the ASCII controls \t..\r and U+0085.
constexpr std::string_view kSpaceClassBody = "\\t-\\r\\x{85}\\p{Z}";

// RegexUnicode::kPcre2: bridges only \s/\S (to White_Space); \p{..} is PCRE2's own. Also
// used for the classes the UCD translation leaves to PCRE2.
std::string translate_pcre2_properties(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); i++) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      if (e == 's') {
        if (in_class) out += kSpaceClassBody;
        else out += "[" + std::string(kSpaceClassBody) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kSpaceClassBody) + "]";
      } else {
        out += c;
        out += e;
      }
      i++;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t close = p.find(":]", i + 2);  // POSIX class such as [:alpha:]
      if (close != std::string_view::npos) {
        out.append(p.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

// One item of a character class: a code point, a set (a property or \s-like escape), or a
// construct this translation leaves to PCRE2.
struct ClassItem {
  enum Kind { kLiteral, kSet, kUnsupported } kind = kUnsupported;
  char32_t code_point = 0;
  unicode::CodePointSet set;
  size_t next = 0;  // the offset after the item
};

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Parses up to max_digits hex digits at p[i]; nullopt when there are none or too large.
std::optional<char32_t> parse_hex(std::string_view p, size_t& i, size_t max_digits) {
  char32_t v = 0;
  size_t digits = 0;
  while (i < p.size() && digits < max_digits && is_hex(p[i])) {
    char c = p[i++];
    v = v * 16 + char32_t(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    if (v > 0x10FFFF) return std::nullopt;
    digits++;
  }
  if (digits == 0) return std::nullopt;
  return v;
}

// \p{Name}, \p{^Name}, \pL or their \P forms at p[i] (a backslash): the set and the offset after
// it, or nullopt for a property the tables do not have.
std::optional<unicode::CodePointSet> parse_property(std::string_view p, size_t i, size_t& next) {
  bool negate = p[i + 1] == 'P';
  std::string_view name;
  if (i + 2 < p.size() && p[i + 2] == '{') {
    size_t close = p.find('}', i + 3);
    if (close == std::string_view::npos) return std::nullopt;
    name = p.substr(i + 3, close - i - 3);
    next = close + 1;
  } else if (i + 2 < p.size()) {
    name = p.substr(i + 2, 1);
    next = i + 3;
  } else {
    return std::nullopt;
  }
  if (!name.empty() && name[0] == '^') {
    negate = !negate;
    name.remove_prefix(1);
  }
  std::optional<unicode::CodePointSet> set = unicode::property_set(name);
  if (set && negate) set = set->complement();
  return set;
}

ClassItem parse_class_item(std::string_view p, size_t i) {
  ClassItem item;
  if (p[i] != '\\') {
    item.kind = ClassItem::kLiteral;
    size_t pos = i;
    item.code_point = unicode::decode_utf8(p, pos);
    item.next = pos;
    return item;
  }
  if (i + 1 >= p.size()) return item;
  const char e = p[i + 1];
  item.next = i + 2;
  if (e == 'p' || e == 'P') {
    if (auto set = parse_property(p, i, item.next)) {
      item.kind = ClassItem::kSet;
      item.set = std::move(*set);
    }
    return item;
  }
  if (auto set = unicode::escape_set(e)) {
    item.kind = ClassItem::kSet;
    item.set = std::move(*set);
    return item;
  }
  item.kind = ClassItem::kLiteral;
  switch (e) {
    case 't': item.code_point = '\t'; return item;
    case 'n': item.code_point = '\n'; return item;
    case 'r': item.code_point = '\r'; return item;
    case 'f': item.code_point = '\f'; return item;
    case 'v': item.code_point = '\v'; return item;
    case 'a': item.code_point = '\a'; return item;
    case 'e': item.code_point = 0x1B; return item;
    case 'x':
    case 'u': {  // \xHH, \x{H...}, \uHHHH
      size_t pos = i + 2;
      std::optional<char32_t> v;
      if (e == 'x' && pos < p.size() && p[pos] == '{') {
        pos++;
        v = parse_hex(p, pos, 8);
        if (!v || pos >= p.size() || p[pos] != '}') break;
        pos++;
      } else {
        v = parse_hex(p, pos, e == 'x' ? 2 : 4);
        if (!v || (e == 'u' && pos != i + 6)) break;
      }
      item.code_point = *v;
      item.next = pos;
      return item;
    }
    default:
      // An escaped punctuation mark or non-ASCII character stands for itself; other escaped
      // letters and digits (octal, \b, \k, ...) are left to PCRE2.
      if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) break;
      size_t pos = i + 1;
      item.code_point = unicode::decode_utf8(p, pos);
      item.next = pos;
      return item;
  }
  item.kind = ClassItem::kUnsupported;
  return item;
}

// The offset after the ']' that closes the class opened at p[open], counting nested classes;
// p.size() when it does not close.
size_t class_end(std::string_view p, size_t open) {
  int depth = 0;
  for (size_t i = open; i < p.size(); i++) {
    if (p[i] == '\\') {
      i++;
    } else if (p[i] == '[') {
      if (p.substr(i, 2) == "[:") {
        size_t close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          i = close + 1;
          continue;
        }
      }
      depth++;
      if (p.substr(i + 1, 2) == "^]") i += 2;  // a ']' first in a class is a member
      else if (p.substr(i + 1, 1) == "]") i += 1;
    } else if (p[i] == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return p.size();
}

// The code points of the class p[open..end): nullopt when it holds a construct left to PCRE2
// (nested classes, POSIX brackets, &&, unknown properties or escapes) or no property at all
// (then it means the same to both engines).
std::optional<unicode::CodePointSet> parse_class(std::string_view p, size_t open, size_t end) {
  size_t i = open + 1;
  bool negate = false;
  if (i < end && p[i] == '^') {
    negate = true;
    i++;
  }
  unicode::CodePointSet set;
  bool has_property = false;
  for (bool first = true; i < end; first = false) {
    if (p[i] == ']' && !first) {
      if (i + 1 != end) return std::nullopt;  // nested: not the closing bracket
      break;
    }
    if (p[i] == '[' || (p[i] == '&' && i + 1 < end && p[i + 1] == '&')) return std::nullopt;
    ClassItem item = parse_class_item(p, i);
    if (item.kind == ClassItem::kUnsupported) return std::nullopt;
    if (item.kind == ClassItem::kSet) {
      set.add(item.set);
      has_property = true;
      i = item.next;
      continue;
    }
    i = item.next;
    if (i + 1 < end && p[i] == '-' && p[i + 1] != ']') {  // a range
      ClassItem last = parse_class_item(p, i + 1);
      if (last.kind != ClassItem::kLiteral || last.code_point < item.code_point)
        return std::nullopt;
      set.add(item.code_point, last.code_point);
      i = last.next;
    } else {
      set.add(item.code_point);
    }
  }
  if (!has_property) return std::nullopt;
  return negate ? set.complement() : set;
}

// RegexUnicode::kUcd: every property, \s-like escape and character class holding one becomes
// a class built from the UCD tables.
std::string translate_ucd_properties(std::string_view p) {
  if (unicode::find_invalid_utf8(p) != std::string_view::npos)
    return translate_pcre2_properties(p);  // PCRE2 will reject it and say why
  std::string out;
  out.reserve(p.size() + 256);
  for (size_t i = 0; i < p.size(); i++) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      size_t next = 0;
      std::optional<unicode::CodePointSet> set;
      if (e == 'p' || e == 'P') {
        set = parse_property(p, i, next);
      } else {
        set = unicode::escape_set(e);
        next = i + 2;
      }
      if (set) {
        out += unicode::pcre2_class(*set);
        i = next - 1;
      } else {
        out += c;
        out += e;
        i++;
      }
      continue;
    }
    if (c == '[') {
      const size_t end = class_end(p, i);
      if (auto set = parse_class(p, i, end)) out += unicode::pcre2_class(*set);
      else out += translate_pcre2_properties(p.substr(i, end - i));
      i = end - 1;
      continue;
    }
    out += c;
  }
  return out;
}

// Per-thread match state: match data and a JIT stack big enough for long whitespace runs.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchState() {
    if (data == nullptr || stack == nullptr || context == nullptr) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

RegexUnicode set_default_regex_unicode(RegexUnicode unicode) {
  return g_default_unicode.exchange(unicode);
}

std::string translate_regex(std::string_view pattern, RegexUnicode unicode) {
  return unicode == RegexUnicode::kUcd ? translate_ucd_properties(pattern)
                                       : translate_pcre2_properties(pattern);
}

Regex::Regex(std::string pattern) : Regex(std::move(pattern), g_default_unicode.load()) {}

Regex::Regex(std::string pattern, RegexUnicode unicode) : pattern_(std::move(pattern)) {
  const std::string translated = translate_regex(pattern_, unicode);
  pcre2_compile_context* ctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, ctx);
  pcre2_compile_context_free(ctx);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw Error("regex \"{}\" does not compile: {} (at offset {} of \"{}\")", pattern_,
                reinterpret_cast<const char*>(message), size_t(offset), translated);
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

Regex::Regex(Regex&& other) noexcept
    : pattern_(std::move(other.pattern_)), code_(std::exchange(other.code_, nullptr)),
      jit_(other.jit_) {}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
    pattern_ = std::move(other.pattern_);
    code_ = std::exchange(other.code_, nullptr);
    jit_ = other.jit_;
  }
  return *this;
}

bool Regex::find(std::string_view text, size_t start, size_t& begin, size_t& end) const {
  auto* code = static_cast<const pcre2_code*>(code_);
  MatchState& state = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = PCRE2_ERROR_JIT_STACKLIMIT;
  if (jit_)
    rc = pcre2_jit_match(code, subject, text.size(), start, 0, state.data, state.context);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // no JIT, or a pathological input: interpret
    rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                     state.data, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    throw Error("regex \"{}\" failed on a {}-byte input: {}", pattern_, text.size(),
                reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

}  // namespace distill
