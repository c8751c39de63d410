// Readers for the third-party tokenizer fixtures in DISTILL_TESTDATA (its README): llama.cpp's
// .inp/.out pairs and the JSONL id files, and a comparison that reports every mismatch.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/file.h"
#include "tokenizer/tokenizer.h"

namespace distill::testing {

inline std::string testdata(const std::string& relative) {
  return std::string(DISTILL_TESTDATA) + "/" + relative;
}

// Texts of a llama.cpp .inp file: each is followed by "\n__ggml_vocab_test__\n".
inline std::vector<std::string> read_inp(const std::string& path) {
  const std::string text = read_file_text(path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t at = text.find(sep); at != std::string::npos; at = text.find(sep, pos)) {
    out.push_back(text.substr(pos, at - pos));
    pos = at + sep.size();
  }
  return out;
}

inline std::vector<std::string> read_lines(const std::string& path) {
  const std::string text = read_file_text(path);
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

// A llama.cpp .out file: one line of " <id>" per test.
inline std::vector<std::vector<int32_t>> read_out(const std::string& path) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& line : read_lines(path)) {
    std::istringstream in(line);
    std::vector<int32_t> ids;
    for (int32_t id; in >> id;) ids.push_back(id);
    out.push_back(ids);
  }
  return out;
}

inline std::vector<std::vector<int32_t>> read_jsonl(const std::string& path) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& line : read_lines(path))
    out.push_back(nlohmann::json::parse(line).get<std::vector<int32_t>>());
  return out;
}

inline std::string ids_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) (s += ' ') += std::to_string(id);
  return s;
}

// Encodes every text and counts exact matches; each mismatch is a test failure naming the case.
// Prints "<name>: N/M exact" so the run shows per-fixture counts.
inline int expect_fixture(const Tokenizer& tok, const std::vector<std::string>& texts,
                          const std::vector<std::vector<int32_t>>& expected,
                          const std::string& name, const EncodeOptions& options = {}) {
  EXPECT_EQ(texts.size(), expected.size()) << name;
  int exact = 0;
  for (size_t i = 0; i < texts.size() && i < expected.size(); i++) {
    std::vector<int32_t> got = tok.encode(texts[i], options);
    if (got == expected[i]) exact++;
    else
      ADD_FAILURE() << name << " case " << i << " text \"" << texts[i] << "\"\n  expected"
                    << ids_string(expected[i]) << "\n  got     " << ids_string(got);
  }
  std::printf("[ fixture  ] %s: %d/%zu exact\n", name.c_str(), exact, expected.size());
  return exact;
}

}  // namespace distill::testing
