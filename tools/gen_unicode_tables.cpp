// Generates the Unicode tables of the pre-tokenizer regexes (src/tokenizer/unicode_tables.h) from
// the Unicode Character Database (Debian's unicode-data: /usr/share/unicode), at build time
// (cmake/unicode_tables.cmake runs it).
//
//   gen_unicode_tables UCD_DIR OUT_INC
//
// Writes the definitions that src/tokenizer/unicode_tables.cpp includes, as sorted range tables:
//   - the general category of every code point (UnicodeData.txt, with its First/Last ranges;
//     code points it does not list are Cn),
//   - White_Space (PropList.txt) and Alphabetic (DerivedCoreProperties.txt),
//   - the general category PCRE2's own tables give each code point, found by matching every
//     code point against \p{..} with the PCRE2 library this build links: regex.cpp uses PCRE2's
//     fast built-in property tests wherever they agree with the UCD and lists code points only
//     where they do not.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode_tables.h"  // the Category order and names (constants only)

namespace {

using distill::unicode_tables::kCategoryCount;
using distill::unicode_tables::kCategoryNames;
constexpr int kCn = distill::unicode_tables::kCn;
constexpr int kCs = distill::unicode_tables::kCs;
constexpr char32_t kMaxCodePoint = 0x10FFFF;

[[noreturn]] void fail(const std::string& why) { throw std::runtime_error(why); }

int category_index(std::string_view name, const std::string& where) {
  for (int i = 0; i < kCategoryCount; i++)
    if (kCategoryNames[i] == name) return i;
  fail(where + ": unknown general category '" + std::string(name) + "'");
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path + ": cannot open (install Debian's unicode-data)");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); i++) {
    if (i == line.size() || line[i] == ';') {
      std::string_view f = line.substr(start, i - start);
      while (!f.empty() && f.front() == ' ') f.remove_prefix(1);
      while (!f.empty() && f.back() == ' ') f.remove_suffix(1);
      fields.push_back(f);
      start = i + 1;
    }
  }
  return fields;
}

char32_t parse_hex(std::string_view s, const std::string& where) {
  if (s.empty() || s.size() > 6) fail(where + ": bad code point '" + std::string(s) + "'");
  char32_t v = 0;
  for (char c : s) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) fail(where + ": bad code point '" + std::string(s) + "'");
    v = v * 16 + char32_t(d);
  }
  if (v > kMaxCodePoint) fail(where + ": code point out of range");
  return v;
}

// The general category of each code point, from UnicodeData.txt.
std::vector<unsigned char> read_general_categories(const std::string& dir) {
  const std::string path = dir + "/UnicodeData.txt";
  std::vector<unsigned char> gc(kMaxCodePoint + 1, kCn);
  const std::vector<std::string> lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); i++) {
    const std::string where = path + ":" + std::to_string(i + 1);
    if (lines[i].empty()) continue;
    auto f = split_fields(lines[i]);
    if (f.size() < 3) fail(where + ": expected at least 3 fields");
    const char32_t first = parse_hex(f[0], where);
    const int category = category_index(f[2], where);
    char32_t last = first;
    if (f[1].ends_with(", First>")) {  // a range: the next line is its "..., Last>"
      if (i + 1 >= lines.size()) fail(where + ": a First> line with no Last> line");
      auto g = split_fields(lines[i + 1]);
      if (g.size() < 3 || !g[1].ends_with(", Last>"))
        fail(path + ":" + std::to_string(i + 2) + ": expected the Last> line of a range");
      last = parse_hex(g[0], where);
      i++;
    }
    for (char32_t c = first; c <= last; c++) gc[c] = static_cast<unsigned char>(category);
  }
  return gc;
}

// The code points with a binary property, from a PropList-style file; also returns the file's
// version from its first line ("# PropList-15.0.0.txt").
std::vector<bool> read_binary_property(const std::string& path, std::string_view property,
                                       std::string* version) {
  std::vector<bool> has(kMaxCodePoint + 1, false);
  const std::vector<std::string> lines = read_lines(path);
  if (version != nullptr && !lines.empty()) {
    const std::string& head = lines[0];
    size_t dash = head.find('-'), dot_txt = head.rfind(".txt");
    if (dash == std::string::npos || dot_txt == std::string::npos || dot_txt < dash)
      fail(path + ":1: expected a '# Name-X.Y.Z.txt' header");
    *version = head.substr(dash + 1, dot_txt - dash - 1);
  }
  size_t count = 0;
  for (size_t i = 0; i < lines.size(); i++) {
    std::string_view line = lines[i];
    line = line.substr(0, line.find('#'));
    if (line.find_first_not_of(' ') == std::string_view::npos) continue;
    const std::string where = path + ":" + std::to_string(i + 1);
    auto f = split_fields(line);
    if (f.size() < 2) fail(where + ": expected 'code points ; property'");
    if (f[1] != property) continue;
    size_t dots = f[0].find("..");
    const char32_t first = parse_hex(f[0].substr(0, dots), where);
    const char32_t last = dots == std::string_view::npos ? first
                                                         : parse_hex(f[0].substr(dots + 2), where);
    for (char32_t c = first; c <= last; c++) has[c] = true;
    count++;
  }
  if (count == 0) fail(path + ": no line gives the property " + std::string(property));
  return has;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

// The general category PCRE2's built-in tables give each code point: one anchored match per
// code point of "(\p{Lu})|(\p{Ll})|...", the capture that took part names the category.
std::vector<unsigned char> pcre2_general_categories(std::string* pcre2_unicode_version) {
  std::string pattern;
  for (int i = 0; i < kCategoryCount; i++) {
    if (i == kCs) continue;  // surrogates cannot occur in UTF-8 subjects
    if (!pattern.empty()) pattern += '|';
    pattern += "(\\p{" + std::string(kCategoryNames[i]) + "})";
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &error, &offset, nullptr);
  if (code == nullptr) fail("PCRE2 does not compile the category probe");
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  std::vector<unsigned char> gc(kMaxCodePoint + 1, kCs);
  std::string subject;
  for (char32_t c = 0; c <= kMaxCodePoint; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    subject.clear();
    append_utf8(subject, c);
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
                         0, data, nullptr);
    if (rc < 2) fail("PCRE2 gives U+" + std::to_string(c) + " no general category");
    // rc - 1 is the highest capture set; groups before Cs are numbered from 1, after it from 0.
    const int group = rc - 1;
    gc[c] = static_cast<unsigned char>(group <= kCs ? group - 1 : group);
  }
  pcre2_match_data_free(data);
  pcre2_code_free(code);
  char version[64] = {};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, version);
  *pcre2_unicode_version = version;
  return gc;
}

void write_category_table(std::ostringstream& out, const char* name,
                          const std::vector<unsigned char>& gc, bool skip_unassigned) {
  out << "const CategoryRange " << name << "[] = {\n";
  size_t n = 0;
  for (char32_t c = 0; c <= kMaxCodePoint;) {
    char32_t end = c;
    while (end < kMaxCodePoint && gc[end + 1] == gc[c]) end++;
    if (!(skip_unassigned && gc[c] == kCn)) {
      char line[64];
      std::snprintf(line, sizeof line, "{0x%X, 0x%X, %d},", unsigned(c), unsigned(end), gc[c]);
      out << line << ((++n % 4 == 0) ? "\n" : " ");
    }
    c = end + 1;
  }
  out << "\n};\nconst size_t " << name << "Size = " << n << ";\n\n";
}

void write_property_table(std::ostringstream& out, const char* name, const std::vector<bool>& has) {
  out << "const Range " << name << "[] = {\n";
  size_t n = 0;
  for (char32_t c = 0; c <= kMaxCodePoint;) {
    char32_t end = c;
    while (end < kMaxCodePoint && has[end + 1] == has[c]) end++;
    if (has[c]) {
      char line[48];
      std::snprintf(line, sizeof line, "{0x%X, 0x%X},", unsigned(c), unsigned(end));
      out << line << ((++n % 6 == 0) ? "\n" : " ");
    }
    c = end + 1;
  }
  out << "\n};\nconst size_t " << name << "Size = " << n << ";\n\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gen_unicode_tables UCD_DIR OUT_INC\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    std::string version, core_version, pcre2_version;
    const std::vector<unsigned char> gc = read_general_categories(dir);
    const std::vector<bool> white_space =
        read_binary_property(dir + "/PropList.txt", "White_Space", &version);
    const std::vector<bool> alphabetic =
        read_binary_property(dir + "/DerivedCoreProperties.txt", "Alphabetic", &core_version);
    if (core_version != version)
      fail("PropList.txt is Unicode " + version + " but DerivedCoreProperties.txt is " +
           core_version);
    const std::vector<unsigned char> pcre2_gc = pcre2_general_categories(&pcre2_version);

    std::ostringstream out;
    out << "// Generated by tools/gen_unicode_tables.cpp from the Unicode Character Database "
        << version << " (" << dir << ") and PCRE2's tables (Unicode " << pcre2_version
        << "). Do not edit.\n"
        << "// Included by src/tokenizer/unicode_tables.cpp inside namespace distill::unicode_tables.\n\n"
        << "const char kUcdVersion[] = \"" << version << "\";\n"
        << "const char kPcre2UnicodeVersion[] = \"" << pcre2_version << "\";\n\n";
    write_category_table(out, "kGeneralCategory", gc, true);
    write_category_table(out, "kPcre2GeneralCategory", pcre2_gc, false);
    write_property_table(out, "kWhiteSpace", white_space);
    write_property_table(out, "kAlphabetic", alphabetic);

    std::ofstream file(argv[2], std::ios::binary);
    file << out.str();
    if (!file.flush()) fail(std::string(argv[2]) + ": cannot write");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gen_unicode_tables: %s\n", e.what());
    return 1;
  }
  return 0;
}
