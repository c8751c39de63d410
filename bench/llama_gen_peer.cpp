// llama_gen_peer: the llama.cpp side of `scripts/bench generate` (bench/generate_bench.py), a small
// program against llama.cpp's C API (llama.h from the source bundle of npm's node-llama-cpp,
// linked with its prebuilt libllama/libggml; see cmake/interop.cmake). It times exactly what
// `distill bench generate` times on our side, on the same GGUF file:
//
//   llama_gen_peer MODEL.gguf --batches 1,8 --prompt-tokens P --gen-tokens G --reps R --threads N
//
// Per batch size B and repetition, from an empty KV cache:
//   prompt processing: one llama_decode of B sequences x P prompt tokens (sequence b is seq_id b,
//     logits only for each sequence's last position), then a greedy pick of every sequence's first
//     token; pp = B*P / that time.
//   generation: G steps of one llama_decode of B tokens (each sequence's last token, logits for
//     all), each followed by the greedy pick; tg = B*G / that time.
// Prompt token t of sequence b is (b*977 + t*131 + 7) mod V on both sides. One warm-up repetition
// is not timed. Prints one JSON line per batch size with the per-repetition rates and medians.
//
// llama.cpp runs in its default context configuration (f16 KV cache, flash attention auto,
// n_batch 2048, n_ubatch 512, per-sequence KV streams) apart from the thread count and a context of
// B sequences x (P + G) positions: what a user of the library gets; plus, as llama-bench does, an
// explicit CPU threadpool attached to the context (LLAMA_PEER_NO_POOL=1 leaves it out; on this
// machine the two are within run-to-run noise).
//
// Two builds of this file: against npm's prebuilt libraries (build/llama_gen_peer, see
// cmake/interop.cmake; ggml loads its CPU backend as a module and picks the zen4 (AVX-512)
// variant here), and against llama.cpp built from the same bundle with -march=native
// (build/llama.cpp-native/peer/llama_gen_peer, built by bench/build_llama_native; the CPU backend
// is linked in). Each JSON line names its build and what ggml's CPU backend was compiled with.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "llama_gen_peer: %s\n", why.c_str());
  std::exit(1);
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (std::getenv("LLAMA_PEER_VERBOSE") || level == GGML_LOG_LEVEL_ERROR)
    std::fputs(text, stderr);
}

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    out.push_back(std::stoi(s.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0.0;
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string json_list(const std::vector<double>& v) {
  std::string s = "[";
  char buf[64];
  for (size_t i = 0; i < v.size(); i++) {
    std::snprintf(buf, sizeof buf, i ? ",%.6g" : "%.6g", v[i]);
    s += buf;
  }
  return s + "]";
}

llama_token argmax(const float* logits, int V) {
  return llama_token(std::max_element(logits, logits + V) - logits);
}

struct Rates {
  double pp, tg;
};

// One repetition at batch size B on a cleared context.
Rates run_once(llama_context* ctx, llama_batch& batch, int B, int P, int G, int V) {
  llama_memory_clear(llama_get_memory(ctx), true);
  std::vector<llama_token> last(B);
  const auto t0 = Clock::now();
  batch.n_tokens = 0;
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < P; t++) {
      const int i = batch.n_tokens++;
      batch.token[i] = llama_token((int64_t(b) * 977 + int64_t(t) * 131 + 7) % V);
      batch.pos[i] = t;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = b;
      batch.logits[i] = t == P - 1;
    }
  }
  if (llama_decode(ctx, batch) != 0) die("llama_decode failed on the prompts");
  for (int b = 0; b < B; b++) last[b] = argmax(llama_get_logits_ith(ctx, b * P + P - 1), V);
  const auto t1 = Clock::now();
  for (int step = 0; step < G; step++) {
    batch.n_tokens = B;
    for (int b = 0; b < B; b++) {
      batch.token[b] = last[b];
      batch.pos[b] = P + step;
      batch.n_seq_id[b] = 1;
      batch.seq_id[b][0] = b;
      batch.logits[b] = 1;
    }
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed while generating");
    for (int b = 0; b < B; b++) last[b] = argmax(llama_get_logits_ith(ctx, b), V);
  }
  const auto t2 = Clock::now();
  const double pp_s = std::chrono::duration<double>(t1 - t0).count();
  const double tg_s = std::chrono::duration<double>(t2 - t1).count();
  return {double(B) * P / pp_s, double(B) * G / tg_s};
}

// `text` as the body of a JSON string.
std::string json_escape(const char* text) {
  std::string s;
  for (const char* p = text; *p; p++) {
    if (*p == '"' || *p == '\\') s += '\\';
    if (static_cast<unsigned char>(*p) >= 0x20) s += *p;
  }
  return s;
}

}  // namespace

#ifndef LLAMA_PEER_BUILD
#define LLAMA_PEER_BUILD "prebuilt"
#endif

int main(int argc, char** argv) {
  if (argc < 2) die("usage: llama_gen_peer MODEL.gguf [--batches 1,8] [--prompt-tokens P] "
                    "[--gen-tokens G] [--reps R] [--threads N]");
  const std::string path = argv[1];
  std::vector<int> batches = {1, 8};
  int P = 128, G = 128, reps = 5, threads = 2;
  for (int i = 2; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) die("option " + a + " needs a value");
    const std::string v = argv[++i];
    if (a == "--batches") batches = parse_ints(v);
    else if (a == "--prompt-tokens") P = std::stoi(v);
    else if (a == "--gen-tokens") G = std::stoi(v);
    else if (a == "--reps") reps = std::stoi(v);
    else if (a == "--threads") threads = std::stoi(v);
    else die("unknown option " + a);
  }
  if (P < 1 || G < 1 || reps < 1 || threads < 1 || batches.empty()) die("bad options");

  llama_log_set(quiet_log, nullptr);
#ifdef LLAMA_PEER_BACKEND_DIR
  ggml_backend_load_all_from_path(LLAMA_PEER_BACKEND_DIR);  // prebuilt: CPU variants are modules
#endif
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(path.c_str(), mp);
  if (!model) die("llama.cpp could not load " + path);
  const int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
  const std::string system_info = json_escape(llama_print_system_info());

  for (int B : batches) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = uint32_t(B) * uint32_t(P + G);
    cp.n_batch = std::max<uint32_t>(cp.n_batch, uint32_t(B) * uint32_t(P));
    cp.n_seq_max = uint32_t(B);
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama.cpp could not create a context");
    // As llama-bench does: an explicit CPU threadpool (polling workers) attached to the context,
    // fetched through the CPU backend's registry (the backend is a loaded module).
    ggml_threadpool* pool = nullptr;
    if (!std::getenv("LLAMA_PEER_NO_POOL")) {
      ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
      using PoolNew = ggml_threadpool* (*)(ggml_threadpool_params*);
      auto pool_new = cpu ? reinterpret_cast<PoolNew>(
                                ggml_backend_reg_get_proc_address(cpu, "ggml_threadpool_new"))
                          : nullptr;
      if (pool_new) {
        ggml_threadpool_params tp = ggml_threadpool_params_default(threads);
        pool = pool_new(&tp);
        if (pool) llama_attach_threadpool(ctx, pool, pool);
      }
    }
    llama_batch batch = llama_batch_init(B * P, 0, 1);
    std::vector<double> pp, tg;
    for (int r = 0; r <= reps; r++) {
      const Rates x = run_once(ctx, batch, B, P, G, V);
      if (r == 0) continue;  // warm-up
      pp.push_back(x.pp);
      tg.push_back(x.tg);
    }
    std::printf("{\"peer\":\"llama.cpp\",\"build\":\"%s\",\"system_info\":\"%s\",\"batch\":%d,"
                "\"prompt_tokens\":%d,\"gen_tokens\":%d,\"threads\":%d,"
                "\"pp_tokens_per_s\":%.6g,\"tg_tokens_per_s\":%.6g,\"pp_runs\":%s,\"tg_runs\":%s}\n",
                LLAMA_PEER_BUILD, system_info.c_str(), B, P, G, threads, median(pp), median(tg),
                json_list(pp).c_str(), json_list(tg).c_str());
    std::fflush(stdout);
    llama_batch_free(batch);
    llama_free(ctx);
    if (pool) {
      using PoolFree = void (*)(ggml_threadpool*);
      auto pool_free = reinterpret_cast<PoolFree>(
          ggml_backend_reg_get_proc_address(ggml_backend_reg_by_name("CPU"), "ggml_threadpool_free"));
      if (pool_free) pool_free(pool);
    }
  }
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
