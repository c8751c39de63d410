#include "eval/cost.h"

#include <malloc.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/model_dir.h"
#include "infer/generator.h"

namespace distill {
namespace fs = std::filesystem;

namespace {

// A "Key:   123 kB" line of /proc/self/status, in bytes; -1 when absent.
int64_t proc_status_bytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return int64_t(std::stoll(line.substr(n + 1))) * 1024;
  return -1;
}

// Writing "5" to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

const ThroughputSample* CostMetrics::at_batch(int batch) const {
  for (const ThroughputSample& s : throughput)
    if (s.batch == batch) return &s;
  return nullptr;
}

int64_t current_rss_bytes() { return proc_status_bytes("VmRSS"); }

int64_t weights_file_bytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors")
      total += int64_t(entry.file_size());
  if (ec) throw Error("{}: cannot list the model directory: {}", dir, ec.message());
  return total;
}

CostMetrics measure_cost(const std::string& dir, const std::vector<int32_t>& sample_tokens,
                         const CostOptions& o, WeightType weights) {
  if (sample_tokens.empty()) throw Error("cost measurement needs sample tokens for its prompts");
  if (o.gen_tokens < 1 || o.prompt_tokens < 1 || o.repeats < 1)
    throw Error("cost options: prompt tokens, generated tokens and repeats must be positive");
  CostMetrics c;
  c.threads = omp_get_max_threads();
  c.weights_file_bytes = weights_file_bytes(dir);
  // Return freed heap pages first, so that the baseline is what is really in use.
  malloc_trim(0);
  const bool reset = reset_peak_rss();
  const int64_t base = current_rss_bytes();
  {
    std::unique_ptr<Model> model = load_model_dir(dir);
    model->set_weight_type(weights);
    c.parameters = int64_t(model->num_params());
    c.weights_memory_bytes = int64_t(model->weight_bytes());
    const int context = model->config().max_position;
    const int G = o.gen_tokens;
    const int P = std::min(o.prompt_tokens, context - G - 1);
    if (P < 1)
      throw Error("{}: context of {} tokens is too short to time {} generated tokens", dir, context,
                  G);
    for (int B : o.batches) {
      std::vector<std::vector<int32_t>> prompts(B);
      for (int b = 0; b < B; b++)
        for (int t = 0; t < P; t++)
          prompts[b].push_back(sample_tokens[(size_t(b) * P + t) % sample_tokens.size()]);
      Generator gen(*model, B, P + G + 1);
      GenerateOptions g;
      g.sampling.temperature = 0.0f;
      g.max_tokens = 1 + G;
      using clock = std::chrono::steady_clock;
      clock::time_point first;
      bool seen_first = false;
      g.stop = [&](int, const std::vector<int32_t>& tokens) {
        if (!seen_first && tokens.size() == 1) {
          first = clock::now();
          seen_first = true;
        }
        return false;
      };
      double prefill = INFINITY, decode = INFINITY, timed = 0.0;
      int runs = 0;
      // Run 0 warms up (buffers, oneDNN primitives) and is not timed.
      for (int r = 0; r <= o.repeats || (timed < o.min_seconds && r <= 100); r++) {
        seen_first = false;
        const auto t0 = clock::now();
        gen.generate(prompts, g);
        const auto t1 = clock::now();
        DISTILL_CHECK(seen_first);
        if (r == 0) continue;
        prefill = std::min(prefill, std::chrono::duration<double>(first - t0).count());
        decode = std::min(decode, std::chrono::duration<double>(t1 - first).count());
        timed += std::chrono::duration<double>(t1 - t0).count();
        runs++;
      }
      ThroughputSample s;
      s.batch = B;
      s.prompt_tokens = P;
      s.gen_tokens = G;
      s.repeats = runs;
      // A microsecond floor keeps the rates finite for a model too small for the clock.
      s.prefill_s = std::max(prefill, 1e-6);
      s.decode_s = std::max(decode, 1e-6);
      s.prompt_tokens_per_s = double(B) * P / s.prefill_s;
      s.gen_tokens_per_s = double(B) * G / s.decode_s;
      c.throughput.push_back(s);
    }
    const int64_t peak = proc_status_bytes("VmHWM");
    if (reset && base >= 0 && peak >= 0) {
      c.peak_rss_delta_bytes = std::max<int64_t>(0, peak - base);
      c.memory_method =
          "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before "
          "loading the model; models are measured one at a time, and one-time "
          "library allocations (oneDNN kernels, threads) count for the first "
          "model of a shape";
    } else {
      c.memory_method = "unavailable: /proc/self/clear_refs or /proc/self/status not usable";
    }
  }
  return c;
}

}  // namespace distill
