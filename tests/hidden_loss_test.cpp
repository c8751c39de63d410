// Hidden-state and attention distillation (distill/hidden_loss.h, Model::add_hidden_grad,
// Model::add_attention_grad): finite-difference checks of the mse and cosine losses' gradients
// wrt the student states and the projection, of the attention-map KL's, of the gradients a model
// receives through add_hidden_grad at every layer boundary and through add_attention_grad at the
// first and last layer (both architectures, with and without activation checkpointing), and the
// layer maps' parsing.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "distill/hidden_loss.h"
#include "model/model.h"
#include "test_support.h"

namespace distill {
namespace {

using test_support::error_of;

std::vector<float> random_vector(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(scale * rng.normal());
  return v;
}

struct LossCase {
  HiddenLossKind kind;
  int Cs, Ct;
};

// d(loss)/d(hs) and d(loss)/d(W) against central differences in double-precision loss values.
TEST(HiddenLoss, GradientsMatchFiniteDifferences) {
  for (const LossCase& c : {LossCase{HiddenLossKind::MSE, 7, 11}, LossCase{HiddenLossKind::MSE, 9, 9},
                            LossCase{HiddenLossKind::Cosine, 13, 5},
                            LossCase{HiddenLossKind::Cosine, 6, 6}}) {
    SCOPED_TRACE(std::string(hidden_loss_name(c.kind)) + " Cs=" + std::to_string(c.Cs) +
                 " Ct=" + std::to_string(c.Ct));
    const int N = 5;
    std::vector<float> hs = random_vector(size_t(N) * c.Cs, 1);
    std::vector<float> ht = random_vector(size_t(N) * c.Ct, 2, 2.0);
    std::vector<float> W;
    if (c.Cs != c.Ct) W = random_vector(size_t(c.Ct) * c.Cs, 3, 0.4);
    const std::vector<float> weights = {1.0f, 0.0f, 1.0f, 0.5f, 1.0f};  // a masked position
    const double normalizer = 3.5, scale = 0.7;
    const float* Wp = W.empty() ? nullptr : W.data();
    std::vector<float> dhs(hs.size(), 0.0f), dW(W.size(), 0.0f);
    hidden_state_loss(c.kind, hs.data(), Wp, ht.data(), weights.data(), N, c.Cs, c.Ct,
                      normalizer, scale, dhs.data(), W.empty() ? nullptr : dW.data());
    auto loss = [&]() {
      return hidden_state_loss(c.kind, hs.data(), W.empty() ? nullptr : W.data(), ht.data(),
                               weights.data(), N, c.Cs, c.Ct, normalizer, scale, nullptr,
                               nullptr);
    };
    const float h = 1e-2f;
    auto check = [&](std::vector<float>& x, const std::vector<float>& grad, const char* what) {
      for (size_t i = 0; i < x.size(); i++) {
        const float keep = x[i];
        x[i] = keep + h;
        const double up = loss();
        x[i] = keep - h;
        const double down = loss();
        x[i] = keep;
        const double fd = (up - down) / (2.0 * h);
        EXPECT_NEAR(grad[i], fd, 2e-3 + 2e-3 * std::fabs(fd)) << what << " " << i;
      }
    };
    check(hs, dhs, "dhs");
    if (!W.empty()) check(W, dW, "dW");
    // Masked position 1 gets no gradient.
    for (int j = 0; j < c.Cs; j++) EXPECT_EQ(dhs[size_t(c.Cs) + j], 0.0f);
  }
}

TEST(HiddenLoss, ValuesOfSimpleCases) {
  const std::vector<float> hs = {1, 2, 3, 4}, ht = {1, 2, 3, 4}, other = {2, 4, 6, 8};
  EXPECT_NEAR(hidden_state_loss(HiddenLossKind::MSE, hs.data(), nullptr, ht.data(), nullptr, 1, 4,
                                4, 1.0, 1.0, nullptr, nullptr), 0.0, 1e-12);
  // mse: mean of squared differences (1 + 4 + 9 + 16) / 4
  EXPECT_NEAR(hidden_state_loss(HiddenLossKind::MSE, hs.data(), nullptr, other.data(), nullptr,
                                1, 4, 4, 1.0, 1.0, nullptr, nullptr), 7.5, 1e-9);
  // cosine is scale-free: parallel vectors have loss 0, orthogonal ones 1
  EXPECT_NEAR(hidden_state_loss(HiddenLossKind::Cosine, hs.data(), nullptr, other.data(), nullptr,
                                1, 4, 4, 1.0, 1.0, nullptr, nullptr), 0.0, 1e-7);
  const std::vector<float> a = {1, 0}, b = {0, 3};
  EXPECT_NEAR(hidden_state_loss(HiddenLossKind::Cosine, a.data(), nullptr, b.data(), nullptr, 1,
                                2, 2, 2.0, 1.0, nullptr, nullptr), 0.5, 1e-9);  // / normalizer
}

TEST(HiddenLoss, LayerMap) {
  using Pairs = std::vector<std::pair<int, int>>;
  EXPECT_EQ(parse_layer_map("uniform", 2, 6), (Pairs{{1, 3}, {2, 6}}));
  EXPECT_EQ(parse_layer_map("", 4, 6), (Pairs{{1, 2}, {2, 3}, {3, 5}, {4, 6}}));  // round half away
  EXPECT_EQ(parse_layer_map("0:0,2:4", 4, 6), (Pairs{{0, 0}, {2, 4}}));
  EXPECT_NE(error_of([] { parse_layer_map("2:7", 4, 6); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_map("1:2,1:3", 4, 6); }).find("mapped twice"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_layer_map("1-2", 4, 6); }).find("is not student:teacher"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_hidden_loss("l1"); }).find("expected mse or cosine"),
            std::string::npos);
}

ModelConfig small_config(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.model_type = arch == Arch::Gpt2 ? "gpt2" : "llama";
  c.vocab_size = 29;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = arch == Arch::Gpt2 ? 4 : 2;
  c.head_dim = 4;
  c.intermediate_size = 24;
  c.max_position = 16;
  c.qkv_bias = c.o_bias = c.mlp_bias = arch == Arch::Gpt2;
  c.tie_word_embeddings = arch == Arch::Gpt2;
  return c;
}

// Compares m.grads() (from a backward the caller ran) with central differences of `loss` on a few
// elements of every tensor; returns how many of the compared gradients were not ~0.
int expect_grads_match_finite_differences(Model& m, const std::function<double()>& loss) {
  int nonzero = 0;
  for (const ParamSpec& s : m.param_specs()) {
    for (size_t e = 0; e < s.numel; e += std::max<size_t>(1, s.numel / 3)) {
      const size_t k = s.offset + e;
      const float keep = m.params()[k], h = 2e-3f;
      m.params()[k] = keep + h;
      const double up = loss();
      m.params()[k] = keep - h;
      const double down = loss();
      m.params()[k] = keep;
      const double fd = (up - down) / (2.0 * h);
      const double g = m.grads()[k];
      // Central differences of a float32 forward: about 1% accurate here. A missing or
      // doubled gradient is off by 100%.
      EXPECT_NEAR(g, fd, 2e-2 + 3e-2 * std::fabs(fd)) << s.name << "[" << e << "]";
      nonzero += std::fabs(g) > 1e-4;
    }
  }
  return nonzero;
}

// L = sum(G * hidden(i)) for a fixed random G: its parameter gradients from add_hidden_grad(i, G)
// with zero dlogits match central differences, at every boundary i (embeddings, between layers,
// the last layer's output), with and without checkpointing.
TEST(HiddenLoss, ModelGradientThroughEveryBoundaryMatchesFiniteDifferences) {
  for (Arch arch : {Arch::Gpt2, Arch::Llama}) {
    for (bool checkpointing : {false, true}) {
      const ModelConfig c = small_config(arch);
      Model m(c);
      m.init_weights(5);
      // Larger weights than the 0.02 init so that every path carries a visible gradient (not so
      // large that softmax saturates and central differences stop being accurate).
      for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 3.0f;
      m.set_checkpointing(checkpointing);
      const int B = 2, T = 5, N = B * T, C = c.hidden_size, V = c.vocab_size;
      std::vector<int32_t> ids(N);
      for (int i = 0; i < N; i++) ids[i] = (i * 7 + 3) % V;
      const std::vector<float> zero_dlogits(size_t(N) * V, 0.0f);
      for (int boundary = 0; boundary <= c.num_layers; boundary++) {
        SCOPED_TRACE(std::string(arch == Arch::Gpt2 ? "gpt2" : "llama") + " boundary " +
                     std::to_string(boundary) + (checkpointing ? " checkpointing" : ""));
        const std::vector<float> G = random_vector(size_t(N) * C, 10 + boundary);
        auto loss = [&]() {
          m.forward(ids.data(), B, T);
          const float* h = m.hidden(boundary);
          double sum = 0.0;
          for (size_t i = 0; i < G.size(); i++) sum += double(G[i]) * h[i];
          return sum;
        };
        m.zero_grad();
        m.forward(ids.data(), B, T);
        m.add_hidden_grad(boundary, G.data());
        m.backward(zero_dlogits.data());
        const int nonzero = expect_grads_match_finite_differences(m, loss);
        // The check compared real gradients, not zeros (boundary 0 reaches the embeddings only).
        EXPECT_GT(nonzero, boundary == 0 ? 0 : 5);
      }
    }
  }
}

// Attention-map KL: its gradient wrt the student's attention probabilities (free variables here)
// matches central differences, with different head counts and a masked query position.
TEST(AttentionLoss, GradientMatchesFiniteDifferences) {
  const int B = 2, T = 4, NHs = 3, NHt = 2;
  auto probs = [&](int NH, uint64_t seed) {
    Rng rng(seed);
    std::vector<float> a(size_t(B) * NH * T * T, 0.0f);
    for (int bh = 0; bh < B * NH; bh++)
      for (int i = 0; i < T; i++) {
        double sum = 0.0;
        for (int j = 0; j <= i; j++) sum += a[(size_t(bh) * T + i) * T + j] = float(0.2 + rng.uniform());
        for (int j = 0; j <= i; j++) a[(size_t(bh) * T + i) * T + j] /= float(sum);
      }
    return a;
  };
  std::vector<float> s = probs(NHs, 1), t = probs(NHt, 2), ds(s.size(), 0.0f);
  std::vector<float> w(size_t(B) * T, 1.0f);
  w[5] = 0.0f;
  const double norm = 6.0, scale = 0.8;
  const double l = attention_map_loss(s.data(), NHs, t.data(), NHt, w.data(), B, T, norm, scale,
                                      ds.data());
  EXPECT_GT(l, 0.0);
  EXPECT_NEAR(attention_map_loss(t.data(), NHt, t.data(), NHt, w.data(), B, T, norm, scale,
                                 nullptr), 0.0, 1e-7);  // identical maps
  const float h = 1e-3f;
  for (size_t i = 0; i < s.size(); i++) {
    const size_t row = i / T, col = i % T, qi = row % T;
    if (col > qi) continue;  // above the causal diagonal: not part of the loss
    const float keep = s[i];
    s[i] = keep + h;
    const double up = attention_map_loss(s.data(), NHs, t.data(), NHt, w.data(), B, T, norm,
                                         scale, nullptr);
    s[i] = keep - h;
    const double down = attention_map_loss(s.data(), NHs, t.data(), NHt, w.data(), B, T, norm,
                                           scale, nullptr);
    s[i] = keep;
    const double fd = (up - down) / (2.0 * h);
    EXPECT_NEAR(ds[i], fd, 1e-3 + 1e-3 * std::fabs(fd)) << i;
  }
}

// L = sum(G * attention probabilities of layer l): its parameter gradients from
// add_attention_grad(l, G) with zero dlogits match central differences (gpt2, llama with GQA
// and RoPE; the first and the last layer; the last one also under checkpointing).
TEST(AttentionLoss, ModelGradientThroughTheSoftmaxMatchesFiniteDifferences) {
  for (Arch arch : {Arch::Gpt2, Arch::Llama}) {
    for (int layer : {0, 1}) {
      for (bool checkpointing : {false, true}) {
        if (checkpointing && layer == 0) continue;  // only the last layer's maps are kept
        SCOPED_TRACE(std::string(arch == Arch::Gpt2 ? "gpt2" : "llama") + " layer " +
                     std::to_string(layer) + (checkpointing ? " checkpointing" : ""));
        const ModelConfig c = small_config(arch);
        Model m(c);
        m.init_weights(9);
        for (size_t i = 0; i < m.num_params(); i++) m.params()[i] *= 3.0f;
        m.set_checkpointing(checkpointing);
        const int B = 2, T = 5, N = B * T, V = c.vocab_size;
        std::vector<int32_t> ids(N);
        for (int i = 0; i < N; i++) ids[i] = (i * 5 + 1) % V;
        const size_t n = size_t(B) * c.num_heads * T * T;
        const std::vector<float> G = random_vector(n, 40 + layer);
        auto loss = [&]() {
          m.forward(ids.data(), B, T);
          const float* a = m.layer_activations(layer).attention;
          double sum = 0.0;
          for (size_t i = 0; i < n; i++)
            if (size_t(i % T) <= (i / T) % T) sum += double(G[i]) * a[i];  // causal part
          return sum;
        };
        std::vector<float> Gc = G;  // the gradient only of the causal part
        for (size_t i = 0; i < n; i++)
          if (size_t(i % T) > (i / T) % T) Gc[i] = 0.0f;
        const std::vector<float> zero_dlogits(size_t(N) * V, 0.0f);
        m.zero_grad();
        m.forward(ids.data(), B, T);
        m.add_attention_grad(layer, Gc.data());
        m.backward(zero_dlogits.data());
        const int nonzero = expect_grads_match_finite_differences(m, loss);
        EXPECT_GT(nonzero, 3);
      }
    }
  }
}

}  // namespace
}  // namespace distill
