// `distill tokenizer encode|decode|info|bench` (and `train`, cmd_tokenizer_train.cpp): token ids
// of text with any tokenizer load_tokenizer opens (tokenizer.json, .model, .gguf, model dir).
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/verbs.h"
#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer.h"

namespace distill::cli {
namespace {

struct TokenizerCliOptions {
  std::string tokenizer;      // tokenizer.json, .model, .gguf or a model directory
  std::string text;           // encode: the text (--text)
  std::string lines;          // encode: a file, one text per line (--lines)
  bool add_special = false;   // encode: the post-processor's BOS/EOS, as HF add_special_tokens
  bool parse_special = false;  // encode: special tokens written in the text become their ids
  std::string ids;            // decode: "1,2,3"
  bool skip_special = false;  // decode: leave special tokens out
  std::string file;           // bench: UTF-8 text, encoded line by line
  double seconds = 3.0;       // bench: measure for at least this long
};

// The lines of a file without their '\n' (a last line without one counts; none after a final
// '\n'), as views into `text`.
std::vector<std::string_view> split_lines(const std::string& text) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    lines.emplace_back(text.data() + pos, nl - pos);
    pos = nl + 1;
  }
  return lines;
}

void print_ids(std::string& out, const std::vector<int32_t>& ids) {
  out += '[';
  for (size_t i = 0; i < ids.size(); i++) {
    if (i > 0) out += ',';
    out += std::to_string(ids[i]);
  }
  out += "]\n";
}

void write_stdout(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size() || std::fflush(stdout) != 0)
    throw Error("cannot write to standard output");
}

int run_encode(const TokenizerCliOptions& o, bool has_text, bool has_lines) {
  if (has_text == has_lines) throw Error("tokenizer encode: give one of --text and --lines");
  auto tok = load_tokenizer(o.tokenizer);
  EncodeOptions options;
  options.add_special_tokens = o.add_special;
  options.parse_special = o.parse_special;
  std::string out;
  if (has_text) {
    print_ids(out, tok->encode(o.text, options));
  } else {
    const std::string text = read_file_text(o.lines);
    const std::vector<std::string_view> lines = split_lines(text);
    std::vector<std::vector<int32_t>> ids;
    try {
      ids = tok->encode_batch(lines, options);
    } catch (const Error& e) {
      throw Error("{}: {}", o.lines, e.what());
    }
    for (const auto& line_ids : ids) print_ids(out, line_ids);
  }
  write_stdout(out);
  return 0;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::string item;
  auto flush = [&] {
    size_t b = item.find_first_not_of(" \t[]"), e = item.find_last_not_of(" \t[]");
    std::string s = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    item.clear();
    if (s.empty()) return;
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || v < 0 || v > INT32_MAX)
      throw Error("--ids: \"{}\" is not a token id (expected comma-separated integers)", s);
    ids.push_back(int32_t(v));
  };
  for (char c : text) {
    if (c == ',') flush();
    else item += c;
  }
  flush();
  return ids;
}

int run_decode(const TokenizerCliOptions& o) {
  const std::vector<int32_t> ids = parse_ids(o.ids);
  auto tok = load_tokenizer(o.tokenizer);
  write_stdout(tok->decode(ids, o.skip_special) + "\n");
  return 0;
}

int run_info(const TokenizerCliOptions& o) {
  auto tok = load_tokenizer(o.tokenizer);
  auto id_or_null = [](std::optional<int32_t> id) {
    return id ? std::to_string(*id) : std::string("null");
  };
  write_stdout(fmt::format(
      "{{\"kind\": \"{}\", \"vocab_size\": {}, \"bos_id\": {}, \"eos_id\": {}, "
      "\"fingerprint\": \"{}\"}}\n",
      tok->kind(), tok->vocab_size(), id_or_null(tok->bos_id()), id_or_null(tok->eos_id()),
      tok->fingerprint()));
  return 0;
}

// CPU seconds of this process, all threads: on a shared machine, MB per CPU-second is the
// steadier measure (wall time counts the time other processes had the cores).
double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Encodes every line of --file with encode_batch (one untimed pass first, so caches are warm
// as in a long run), repeating until --seconds have passed; prints one JSON line.
int run_bench(const TokenizerCliOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto load_start = clock::now();
  auto tok = load_tokenizer(o.tokenizer);
  const double load_seconds = std::chrono::duration<double>(clock::now() - load_start).count();
  EncodeOptions options;
  options.parse_special = o.parse_special;
  const std::string text = read_file_text(o.file);
  const std::vector<std::string_view> lines = split_lines(text);
  size_t bytes = 0;
  for (std::string_view l : lines) bytes += l.size();
  size_t tokens = 0;
  for (const auto& ids : tok->encode_batch(lines, options)) tokens += ids.size();
  int passes = 0;
  double elapsed = 0;
  const auto start = clock::now();
  const double cpu_start = cpu_seconds();
  while (passes == 0 || elapsed < o.seconds) {
    auto ids = tok->encode_batch(lines, options);
    passes++;
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  }
  const double cpu = cpu_seconds() - cpu_start;
  write_stdout(fmt::format(
      "{{\"impl\": \"distill\", \"tokenizer\": \"{}\", \"threads\": {}, \"lines\": {}, "
      "\"bytes\": {}, \"tokens\": {}, \"passes\": {}, \"seconds\": {:.3f}, "
      "\"cpu_seconds\": {:.3f}, \"load_seconds\": {:.3f}, \"mb_per_s\": {:.2f}, "
      "\"mb_per_cpu_s\": {:.2f}}}\n",
      o.tokenizer, omp_get_max_threads(), lines.size(), bytes, tokens, passes, elapsed, cpu,
      load_seconds, double(bytes) * passes / elapsed / 1e6, double(bytes) * passes / cpu / 1e6));
  return 0;
}

}  // namespace

VerbRun add_tokenizer(CLI::App& app) {
  auto o = std::make_shared<TokenizerCliOptions>();
  app.require_subcommand(1);
  auto add_tokenizer_option = [&](CLI::App* sub) {
    sub->add_option("--tokenizer", o->tokenizer,
                    "tokenizer.json, SentencePiece .model, .gguf, or a model directory")
        ->required();
  };

  CLI::App* encode = app.add_subcommand("encode", "print the token ids of text as JSON arrays");
  add_tokenizer_option(encode);
  CLI::Option* text = encode->add_option("--text", o->text, "the text to encode");
  CLI::Option* lines =
      encode->add_option("--lines", o->lines, "a file: one id array per line (without its newline)")
          ->check(CLI::ExistingFile)
          ->excludes(text);
  encode->add_flag("--add-special", o->add_special,
                   "add the tokenizer's BOS/EOS template (HF add_special_tokens)");
  encode->add_flag("--parse-special", o->parse_special,
                   "special tokens written in the text (e.g. <|im_start|>) become their ids");

  CLI::App* decode = app.add_subcommand("decode", "print the text of token ids");
  add_tokenizer_option(decode);
  decode->add_option("--ids", o->ids, "comma-separated token ids, e.g. \"15496,995\"")
      ->required();
  decode->add_flag("--skip-special", o->skip_special, "leave special tokens out");

  CLI::App* info =
      app.add_subcommand("info", "print a tokenizer's kind, size, BOS/EOS and fingerprint");
  add_tokenizer_option(info);

  CLI::App* bench = app.add_subcommand(
      "bench", "encode a text file line by line and print MB/s (see bench/tokenizer_bench.sh)");
  add_tokenizer_option(bench);
  bench->add_option("--file", o->file, "UTF-8 text file")->required()->check(CLI::ExistingFile);
  bench->add_option("--seconds", o->seconds, "measure for at least this long")
      ->capture_default_str();
  bench->add_flag("--parse-special", o->parse_special,
                  "special tokens written in the text become their ids (as HF's default encode)");

  add_tokenizer_train(app);

  return [o, encode, text, lines, decode, info, bench]() -> int {
    if (encode->parsed()) return run_encode(*o, text->count() > 0, lines->count() > 0);
    if (decode->parsed()) return run_decode(*o);
    if (info->parsed()) return run_info(*o);
    if (bench->parsed()) return run_bench(*o);
    return 0;  // `train` runs from its own callback during parsing
  };
}

}  // namespace distill::cli
