// report.html in a real browser: headless Chromium (Debian's `chromium`) loads the page, its DOM
// has the tables and every chart, and a screenshot at 1280x2000 is written (and kept, so a
// person can look at it: the path is printed). Skipped when /usr/bin/chromium is absent.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "eval/report.h"

namespace distill {
namespace {
namespace fs = std::filesystem;

const char* kChromium = "/usr/bin/chromium";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) n++;
  return n;
}

ModelReport model(const std::string& name, const std::string& role, int64_t params, double ppl,
                  double kl, double agree, double exact, double gen_tps) {
  ModelReport m;
  m.name = name;
  m.role = role;
  m.dir = "runs/" + name + "/model";
  m.model_type = role == "student" ? "llama" : "gpt2";
  m.layers = role == "teacher" ? 6 : 2;
  m.hidden_size = role == "teacher" ? 256 : 128;
  m.vocab_size = 256;
  m.quality.positions = 8128;
  m.quality.windows = 64;
  m.quality.perplexity = ppl;
  m.quality.mean_nll = std::log(ppl);
  m.quality.kl_to_teacher = kl;
  m.quality.top1_agreement = agree;
  m.quality.top1_accuracy = agree * 0.6;
  TaskScore t;
  t.prompts = 20;
  t.exact = int64_t(std::lround(exact * 20));
  t.contains = std::min<int64_t>(20, t.exact + 3);
  t.exact_rate = double(t.exact) / 20;
  t.contains_rate = double(t.contains) / 20;
  const char* outputs[] = {" went unto the city", " <spake> & blessed", "\nthe river"};
  for (int i = 0; i < 20; i++)
    t.outcomes.push_back({outputs[i % 3], i < t.exact, i < t.contains, 4});
  m.task = t;
  m.cost.parameters = params;
  m.cost.weights_file_bytes = params * 4 + 4096;
  m.cost.weights_memory_bytes = params * 4;
  m.cost.peak_rss_delta_bytes = params * 9;
  m.cost.memory_method = "peak RSS (VmHWM) minus RSS before loading";
  m.cost.threads = 2;
  for (int b : {1, 8})
    m.cost.throughput.push_back(
        {b, 64, 32, 0.01, 0.1, 9e6 / double(params) * b * 40, gen_tps * (b == 1 ? 1 : 5.2), 3});
  return m;
}

// A report with every section filled: three models, a task, two runs.
EvalReport sample_report() {
  EvalReport r;
  r.created = "2024-01-01T00:00:00Z";
  r.text_files = {"build/data/kjv.txt"};
  r.held_out_rule = "last 5% of each file";
  r.seq_len = 128;
  r.max_windows = 64;
  r.max_new_tokens = 16;
  r.held_out_tokens = 214911;
  r.tokenizer_kind = "bytes";
  r.tokenizer_fingerprint = "distill-bytes-v1";
  r.vocab_size = 256;
  r.task_file = "tasks/kjv.jsonl";
  r.threads = 2;
  r.models = {model("teacher", "teacher", 4770000, 4.12, 0.0, 1.0, 0.55, 310.0),
              model("student", "student", 412000, 5.03, 0.187, 0.781, 0.45, 1820.0),
              model("baseline", "baseline", 412000, 5.61, 0.334, 0.702, 0.30, 1790.0)};
  for (int i = 0; i < 20; i++)
    r.task_examples.push_back({fmt::format("And the king {} ", i), "went", int64_t(i + 1)});
  for (const char* name : {"student-kd", "baseline-ce"}) {
    RunCurve c;
    c.name = name;
    c.path = fmt::format("runs/{}/metrics.jsonl", name);
    const double floor = name[0] == 's' ? 1.55 : 1.72;
    for (int step = 1; step <= 600; step++) {
      const double noise = 0.05 * std::sin(step * 1.7) * std::exp(-step / 400.0);
      c.loss.emplace_back(step, floor + 3.9 * std::exp(-step / 70.0) + noise);
      if (step % 50 == 0)
        c.val_loss.emplace_back(step, floor + 0.08 + 3.9 * std::exp(-step / 70.0));
    }
    r.runs.push_back(c);
  }
  return r;
}

TEST(ReportBrowser, ChromiumRendersTablesAndCharts) {
  if (!fs::exists(kChromium))
    GTEST_SKIP() << kChromium << " is absent: install Debian's chromium (scripts/install-deps) "
                 << "to render report.html in a browser";
  // Kept after the test so the screenshot can be looked at.
  const fs::path dir = fs::temp_directory_path() / "distill-report-browser";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const EvalReport report = sample_report();
  const std::string html_path = write_report(report, dir.string());
  const std::string html = slurp(html_path);
  const std::string url = "file://" + fs::absolute(html_path).string();

  auto chromium = [&](const std::string& flags, const std::string& out, const std::string& tag) {
    const fs::path profile = dir / ("profile-" + tag);
    fs::create_directories(profile);
    const std::string cmd = fmt::format(
        "timeout 180 {} --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
        "--disable-background-networking --disable-component-update --disable-sync "
        "--user-data-dir={} {} '{}' > {} 2> {}",
        kChromium, profile.string(), flags, url, out, (dir / (tag + ".log")).string());
    return std::system(cmd.c_str());
  };

  ASSERT_EQ(chromium("--dump-dom", (dir / "dom.html").string(), "dom"), 0)
      << slurp(dir / "dom.log");
  const std::string dom = slurp(dir / "dom.html");
  EXPECT_EQ(count(dom, "<table"), count(html, "<table"));
  EXPECT_GE(count(dom, "<table"), 3u);  // metrics, examples, models
  EXPECT_EQ(count(dom, "<svg"), count(html, "<svg"));
  EXPECT_EQ(count(dom, "<svg"), report_metrics(report).size() + 3);
  EXPECT_EQ(count(dom, "viewBox="), count(dom, "<svg"));
  EXPECT_NE(dom.find("Distillation report"), std::string::npos);
  EXPECT_NE(dom.find(">5.030<"), std::string::npos);  // the student's perplexity
  EXPECT_NE(dom.find("&lt;spake&gt; &amp; blessed"), std::string::npos);  // escaped text

  const fs::path png = dir / "report.png";
  ASSERT_EQ(chromium(fmt::format("--hide-scrollbars --window-size=1280,2000 --screenshot={}",
                                 png.string()),
                     "/dev/null", "shot"),
            0)
      << slurp(dir / "shot.log");
  const std::string bytes = slurp(png);
  ASSERT_GE(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(bytes[at])) << 24) | (uint32_t(uint8_t(bytes[at + 1])) << 16) |
           (uint32_t(uint8_t(bytes[at + 2])) << 8) | uint32_t(uint8_t(bytes[at + 3]));
  };
  EXPECT_EQ(be32(16), 1280u);  // IHDR width
  EXPECT_EQ(be32(20), 2000u);  // IHDR height
  // A blank or unstyled page compresses to a few kilobytes; charts and tables do not.
  EXPECT_GT(bytes.size(), 60000u);
  std::cout << "screenshot: " << png.string() << "\n";
}

}  // namespace
}  // namespace distill
