// Our side of scripts/bench: `bench train` times training steps of a preset on random tokens;
// `bench gemm` measures this machine's GEMM peak through the same oneDNN path the kernels use;
// `bench generate` times prompt processing and generation through the batched Generator, exactly
// as bench/llama_gen_peer.cpp times llama.cpp. Each prints JSON lines; scripts/bench runs the peer
// in the same session and prints ratios.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/verbs.h"
#include "core/arena.h"
#include "core/error.h"
#include "core/rng.h"
#include "formats/gguf_import.h"
#include "formats/model_dir.h"
#include "infer/generator.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/lm_step.h"
#include "train/optimizer.h"

namespace distill::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchTrainOptions {
  std::string preset = "gpt2-bench";
  int batch_size = 8;
  int seq_len = 256;
  int steps = 20;
  int warmup = 3;
  std::string precision = "f32";
};

struct BenchGemmOptions {
  int size = 2048;
  int reps = 10;
  std::string precision = "f32";
  WeightType weights = WeightType::F32;  // other than f32: qmatmul_forward on a (size, size) QMatrix
  int rows = 0;                          // rows of x with --weights (0: size)
};

struct BenchGenerateOptions {
  std::string model;         // model directory or .gguf file; empty: --preset, random weights
  std::string preset = "llama-bench";
  uint64_t seed = 1;         // of the random weights
  std::string save_model;    // write the (random) model here as a model directory and stop
  std::vector<int> batches = {1, 8};
  int prompt_tokens = 128;   // P per sequence
  int gen_tokens = 96;       // G per sequence, after the first token
  int reps = 5;              // timed repetitions per batch size, after one warm-up
  WeightType weights = WeightType::F32;  // the linear layers' type (kernels/qmatmul.h)
  std::string isa = "auto";  // the low-precision kernels' instruction set
  std::string kv_cache = "f32";  // the KV cache's storage type
};

MatmulPrecision parse_precision(const std::string& p) {
  if (p == "f32") return MatmulPrecision::F32;
  if (p == "bf16") return MatmulPrecision::BF16;
  throw Error("unknown precision '{}' (expected f32 or bf16)", p);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0.0;
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Training FLOPs per token, as ../shared/PEERS.md counts them: 6 x (matmul parameters, LM head
// included) + 12 * L * (q width) * T for attention scores and values, forward and backward.
double flops_per_token(const ModelConfig& c, int T) {
  const double C = c.hidden_size, F = c.intermediate_size;
  const double mlp = c.arch == Arch::Gpt2 ? 2 * C * F : 3 * C * F;
  const double per_layer = C * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * C + mlp;
  return 6.0 * (c.num_layers * per_layer + C * c.vocab_size) +
         12.0 * c.num_layers * c.q_dim() * double(T);
}

int run_train(const BenchTrainOptions& o) {
  ModelConfig config = model_preset(o.preset);
  Model model(config);
  model.set_precision(parse_precision(o.precision));
  model.init_weights(1);
  AdamW optimizer(model, AdamWOptions{});
  Rng rng(7);
  const size_t BT = size_t(o.batch_size) * o.seq_len;
  std::vector<int32_t> ids(BT), targets(BT);
  std::vector<double> times, losses;
  for (int step = 0; step < o.warmup + o.steps; step++) {
    for (size_t i = 0; i < BT; i++) {
      ids[i] = int32_t(rng.below(config.vocab_size));
      targets[i] = int32_t(rng.below(config.vocab_size));
    }
    const auto t0 = Clock::now();
    model.zero_grad();
    const LossSum loss = lm_forward_backward(model, ids.data(), targets.data(), o.batch_size,
                                             o.seq_len, 1.0f / float(BT));
    const float scale = clip_scale(grad_norm(model.grads(), model.num_params()), 1.0f);
    optimizer.step(model, 3e-4f, scale);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (step >= o.warmup) times.push_back(dt);
    losses.push_back(loss.mean());
  }
  const double step_s = median(times);
  const double tps = double(BT) / step_s;
  const double fpt = flops_per_token(config, o.seq_len);
  nlohmann::json j = {{"peer", "distill"},
                      {"preset", o.preset},
                      {"precision", o.precision},
                      {"threads", omp_get_max_threads()},
                      {"params", model.num_params()},
                      {"tokens_per_s", tps},
                      {"step_ms_median", step_s * 1e3},
                      {"flops_per_token", fpt},
                      {"gflops", tps * fpt / 1e9},
                      {"losses", losses}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// Per batch size B and repetition: B prompts of P tokens through Generator::generate (greedy,
// max_tokens 1 + G). The prompt-processing time runs from the call to the moment every sequence
// has its first token (the prefill forward pass and B greedy picks); the generation time from
// then to the return (G decode steps of B rows). Prompt token t of sequence b is
// (b*977 + t*131 + 7) mod V, as in bench/llama_gen_peer.cpp.
int run_generate(const BenchGenerateOptions& o) {
  std::unique_ptr<Model> model;
  std::string source;
  if (!o.model.empty()) {
    const bool gguf = o.model.size() > 5 && o.model.compare(o.model.size() - 5, 5, ".gguf") == 0;
    model = gguf ? load_gguf_model(o.model) : load_model_dir(o.model);
    source = o.model;
  } else {
    model = std::make_unique<Model>(model_preset(o.preset), /*trainable=*/false);
    model->init_weights(o.seed);
    source = "preset " + o.preset;
  }
  if (!o.save_model.empty()) {
    save_model_dir(*model, o.save_model);
    std::printf("wrote %s (%s, %zu parameters)\n", o.save_model.c_str(), source.c_str(),
                model->num_params());
    return 0;
  }
  const int P = o.prompt_tokens, G = o.gen_tokens, V = model->config().vocab_size;
  if (P < 1 || G < 1 || o.reps < 1) throw Error("bench generate: P, G and reps must be positive");
  model->set_weight_type(o.weights);
  if (o.isa == "auto") set_kernel_isa(KernelIsa::Auto);
  else if (o.isa == "avx512") set_kernel_isa(KernelIsa::Avx512);
  else if (o.isa == "avx2") set_kernel_isa(KernelIsa::Avx2);
  else if (o.isa == "scalar") set_kernel_isa(KernelIsa::Scalar);
  else throw Error("unknown --isa '{}' (expected auto, avx512, avx2 or scalar)", o.isa);
  const KvType kv_type = parse_kv_type(o.kv_cache);
  for (int B : o.batches) {
    if (B < 1) throw Error("bench generate: batch size {} is not positive", B);
    std::vector<std::vector<int32_t>> prompts(B);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < P; t++)
        prompts[b].push_back(int32_t((int64_t(b) * 977 + int64_t(t) * 131 + 7) % V));
    KvCacheOptions kv;
    kv.type = kv_type;
    Generator gen(*model, B, P + G + 1, kv);
    GenerateOptions g;
    g.sampling.temperature = 0.0f;
    g.max_tokens = 1 + G;
    Clock::time_point first;
    int firsts = 0;
    g.stop = [&](int, const std::vector<int32_t>& tokens) {
      if (tokens.size() == 1 && ++firsts == B) first = Clock::now();
      return false;
    };
    std::vector<double> pp, tg;
    for (int r = 0; r <= o.reps; r++) {
      firsts = 0;
      const auto t0 = Clock::now();
      const std::vector<Generation> out = gen.generate(prompts, g);
      const auto t1 = Clock::now();
      DISTILL_CHECK(firsts == B);
      for (const Generation& x : out) DISTILL_CHECK(int(x.tokens.size()) == 1 + G);
      if (r == 0) continue;  // warm-up: buffers, oneDNN primitives
      pp.push_back(double(B) * P / std::chrono::duration<double>(first - t0).count());
      tg.push_back(double(B) * G / std::chrono::duration<double>(t1 - first).count());
    }
    nlohmann::json j = {{"peer", "distill"},
                        {"model", source},
                        {"params", model->num_params()},
                        {"weights", weight_type_name(model->weight_type())},
                        {"weight_bytes", model->weight_bytes()},
                        {"isa", kernel_isa_name(kernel_isa())},
                        {"kv_cache", kv_type_name(kv_type)},
                        {"batch", B},
                        {"prompt_tokens", P},
                        {"gen_tokens", G},
                        {"threads", omp_get_max_threads()},
                        {"pp_tokens_per_s", median(pp)},
                        {"tg_tokens_per_s", median(tg)},
                        {"pp_runs", pp},
                        {"tg_runs", tg}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

int run_gemm(const BenchGemmOptions& o) {
  const int n = o.size;
  FloatBuffer a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  Rng rng(3);
  for (size_t i = 0; i < a.size(); i++) {
    a.data()[i] = float(rng.uniform() - 0.5);
    b.data()[i] = float(rng.uniform() - 0.5);
  }
  const MatmulPrecision prec = parse_precision(o.precision);
  const int M = o.weights == WeightType::F32 || o.rows <= 0 ? n : std::min(o.rows, n);
  std::unique_ptr<QMatrix> q;
  if (o.weights != WeightType::F32) q = std::make_unique<QMatrix>(b.data(), n, n, o.weights);
  std::vector<double> times;
  for (int r = 0; r < o.reps + 2; r++) {
    const auto t0 = Clock::now();
    if (q)
      qmatmul_forward(c.data(), a.data(), *q, nullptr, M);
    else
      gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n, prec);
    if (r >= 2) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  const double gflops = 2.0 * M * double(n) * n / median(times) / 1e9;
  nlohmann::json j = {{"bench", "gemm"}, {"precision", o.precision}, {"size", n}, {"rows", M},
                      {"weights", weight_type_name(o.weights)},
                      {"isa", kernel_isa_name(kernel_isa())},
                      {"threads", omp_get_max_threads()}, {"gflops", gflops}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

VerbRun add_bench(CLI::App& app) {
  app.require_subcommand(1);
  auto t = std::make_shared<BenchTrainOptions>();
  CLI::App* train = app.add_subcommand("train", "time training steps on random tokens");
  train->add_option("--preset", t->preset, "model preset (gpt2-bench, llama-bench, ...)");
  train->add_option("--batch-size", t->batch_size, "sequences per step");
  train->add_option("--seq-len", t->seq_len, "tokens per sequence");
  train->add_option("--steps", t->steps, "timed steps");
  train->add_option("--warmup", t->warmup, "untimed steps first");
  train->add_option("--precision", t->precision, "matmul precision: f32 or bf16");
  auto g = std::make_shared<BenchGemmOptions>();
  CLI::App* gemm_cmd = app.add_subcommand("gemm", "measure square GEMM throughput");
  gemm_cmd->add_option("--size", g->size, "matrix size n (n x n x n)");
  gemm_cmd->add_option("--reps", g->reps, "timed repetitions");
  gemm_cmd->add_option("--precision", g->precision, "f32 or bf16");
  add_weights_option(*gemm_cmd, g->weights);
  gemm_cmd->add_option("--rows", g->rows, "rows of x with --weights (default: --size)");
  auto gen = std::make_shared<BenchGenerateOptions>();
  CLI::App* gen_cmd = app.add_subcommand(
      "generate", "time prompt processing and generation (batched, KV cache, greedy)");
  gen_cmd->add_option("--model", gen->model, "model directory or .gguf file (default: --preset)");
  gen_cmd->add_option("--preset", gen->preset, "model preset with random weights");
  gen_cmd->add_option("--seed", gen->seed, "seed of the random weights");
  gen_cmd->add_option("--save-model", gen->save_model,
                      "write the model as a model directory here and stop (to export it)");
  gen_cmd->add_option("--batches", gen->batches, "batch sizes (sequences decoded together)")
      ->delimiter(',');
  gen_cmd->add_option("--prompt-tokens", gen->prompt_tokens, "prompt tokens per sequence");
  gen_cmd->add_option("--gen-tokens", gen->gen_tokens,
                      "generated tokens per sequence timed (after the first)");
  gen_cmd->add_option("--reps", gen->reps, "timed repetitions per batch size (after a warm-up)");
  add_weights_option(*gen_cmd, gen->weights);
  gen_cmd->add_option("--isa", gen->isa,
                      "instruction set of the low-precision kernels: auto, avx512, avx2, scalar");
  gen_cmd->add_option("--kv-cache", gen->kv_cache, "KV cache storage: f32, bf16 or f16");
  return [&app, t, g, gen, train, gen_cmd]() {
    if (train->parsed()) return run_train(*t);
    if (gen_cmd->parsed()) return run_generate(*gen);
    return run_gemm(*g);
  };
}

}  // namespace distill::cli
