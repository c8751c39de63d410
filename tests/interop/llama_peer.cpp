// llama_peer: the llama.cpp side of the GGUF interop test (tests/interop_test.cpp), a small
// program against llama.cpp's C API (llama.h from the llama.cpp source bundle that npm's
// node-llama-cpp ships, linked with its prebuilt libllama/libggml; see cmake/interop.cmake).
//
//   llama_peer MODEL.gguf REQUESTS      (MODEL may be "-" when only ggml requests are made)
//
// REQUESTS has one request per line; the answer is one JSON object on stdout:
//   {"n_vocab": V, "results": [...]} with one result per request, in order:
//   tokenize <hex of the text bytes>    -> {"tokens": [ids]}   (no BOS/EOS, specials not parsed)
//   tokenize_special <hex>              -> {"tokens": [ids]}   (no BOS/EOS, specials parsed)
//   logits <id> <id> ...                -> {"logits": [V floats]} for the last position, the
//                                          prompt evaluated from an empty KV cache
//   quantize <ggml type> <floats...>    -> {"bytes": "<hex>"}   ggml_quantize_chunk, one row
//   dequant <ggml type> <n> <hex bytes> -> {"values": [n floats]} ggml's to_float
// Non-finite floats are written as null. Exit status 1 with a message on stderr on any failure.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "llama_peer: %s\n", why.c_str());
  std::exit(1);
}

std::string from_hex(const std::string& hex) {
  if (hex.size() % 2) die("odd hex length");
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

void print_floats(const float* x, size_t n) {
  std::printf("[");
  for (size_t i = 0; i < n; i++) {
    if (i) std::printf(",");
    if (std::isfinite(x[i])) std::printf("%.9g", double(x[i]));
    else std::printf("null");
  }
  std::printf("]");
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (std::getenv("LLAMA_PEER_VERBOSE") || level == GGML_LOG_LEVEL_ERROR)
    std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) die("usage: llama_peer MODEL.gguf|- REQUESTS");
  llama_log_set(quiet_log, nullptr);
  // The prebuilt ggml loads its CPU backend (one build per CPU family) from this directory.
  ggml_backend_load_all_from_path(LLAMA_PEER_BACKEND_DIR);
  llama_backend_init();

  std::ifstream in(argv[2]);
  if (!in) die(std::string("cannot read ") + argv[2]);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);

  llama_model* model = nullptr;
  llama_context* ctx = nullptr;
  const llama_vocab* vocab = nullptr;
  int n_vocab = 0;
  if (std::string(argv[1]) != "-") {
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    model = llama_model_load_from_file(argv[1], mp);
    if (!model) die(std::string("llama.cpp could not load ") + argv[1]);
    vocab = llama_model_get_vocab(model);
    n_vocab = llama_vocab_n_tokens(vocab);
    // Longest prompt decides the context; f32 KV cache and no flash attention, so that the only
    // differences from distill are in the order of floating-point operations.
    int n_ctx = 16;
    for (const std::string& l : lines)
      if (l.rfind("logits ", 0) == 0) n_ctx = std::max<int>(n_ctx, int(l.size()));  // >= #ids
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = uint32_t(n_ctx);
    cp.n_batch = uint32_t(n_ctx);
    cp.n_ubatch = uint32_t(n_ctx);
    cp.n_seq_max = 1;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama.cpp could not create a context");
  }

  std::printf("{\"n_vocab\":%d,\"results\":[", n_vocab);
  for (size_t r = 0; r < lines.size(); r++) {
    std::istringstream req(lines[r]);
    std::string verb;
    req >> verb;
    if (r) std::printf(",");
    if (verb == "tokenize" || verb == "tokenize_special") {
      if (!vocab) die("tokenize needs a model");
      std::string hex;
      req >> hex;
      const std::string text = from_hex(hex);
      std::vector<llama_token> ids(text.size() + 16);
      int n = llama_tokenize(vocab, text.data(), int32_t(text.size()), ids.data(),
                             int32_t(ids.size()), false, verb == "tokenize_special");
      if (n < 0) die("tokenize failed");
      std::printf("{\"tokens\":[");
      for (int i = 0; i < n; i++) std::printf(i ? ",%d" : "%d", ids[i]);
      std::printf("]}");
    } else if (verb == "logits") {
      if (!ctx) die("logits needs a model");
      std::vector<llama_token> ids;
      for (llama_token id; req >> id;) ids.push_back(id);
      if (ids.empty()) die("logits needs at least one id");
      llama_memory_clear(llama_get_memory(ctx), true);
      if (llama_decode(ctx, llama_batch_get_one(ids.data(), int32_t(ids.size()))) != 0)
        die("llama_decode failed");
      const float* logits = llama_get_logits_ith(ctx, -1);
      if (!logits) die("no logits");
      std::printf("{\"logits\":");
      print_floats(logits, size_t(n_vocab));
      std::printf("}");
    } else if (verb == "quantize") {
      int type;
      req >> type;
      std::vector<float> x;
      for (float v; req >> v;) x.push_back(v);
      std::vector<uint8_t> out(ggml_row_size(ggml_type(type), int64_t(x.size())));
      ggml_quantize_chunk(ggml_type(type), x.data(), out.data(), 0, 1, int64_t(x.size()), nullptr);
      std::printf("{\"bytes\":\"%s\"}", to_hex(out.data(), out.size()).c_str());
    } else if (verb == "dequant") {
      int type;
      int64_t n;
      std::string hex;
      req >> type >> n >> hex;
      const std::string bytes = from_hex(hex);
      if (bytes.size() != ggml_row_size(ggml_type(type), n)) die("dequant: wrong byte count");
      std::vector<float> y(static_cast<size_t>(n));
      ggml_get_type_traits(ggml_type(type))->to_float(bytes.data(), y.data(), n);
      std::printf("{\"values\":");
      print_floats(y.data(), y.size());
      std::printf("}");
    } else {
      die("unknown request '" + verb + "'");
    }
  }
  std::printf("]}\n");
  if (ctx) llama_free(ctx);
  if (model) llama_model_free(model);
  llama_backend_free();
  return 0;
}
