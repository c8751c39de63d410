#include "distill/hidden_loss.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "kernels/kernels.h"

namespace distill {

HiddenLossKind parse_hidden_loss(const std::string& name) {
  if (name == "mse") return HiddenLossKind::MSE;
  if (name == "cosine") return HiddenLossKind::Cosine;
  throw Error("--hidden-loss '{}': expected mse or cosine", name);
}

const char* hidden_loss_name(HiddenLossKind kind) {
  return kind == HiddenLossKind::MSE ? "mse" : "cosine";
}

namespace {

// "s:t,..." pairs with s in [0, smax], t in [0, tmax], each s at most once; `flag` and `range`
// name the option and what the numbers are in errors.
std::vector<std::pair<int, int>> parse_pairs(const std::string& text, int smax, int tmax,
                                             const std::string& flag, const std::string& range) {
  std::vector<std::pair<int, int>> pairs;
  std::stringstream ss(text);
  std::string item;
  std::vector<uint8_t> used(size_t(smax) + 1, 0);
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':');
    int s = -1, t = -1;
    try {
      size_t a = 0, b = 0;
      if (colon != std::string::npos) {
        s = std::stoi(item.substr(0, colon), &a);
        t = std::stoi(item.substr(colon + 1), &b);
        if (a != colon || b != item.size() - colon - 1) s = t = -1;
      }
    } catch (const std::exception&) {
      s = t = -1;
    }
    if (s < 0 || t < 0)
      throw Error("{} '{}': '{}' is not student:teacher (e.g. 2:4)", flag, text, item);
    if (s > smax || t > tmax)
      throw Error("{} '{}': '{}' is out of range: student {} 0..{}, teacher 0..{}", flag, text,
                  item, range, smax, tmax);
    if (used[s]) throw Error("{} '{}': student {} {} is mapped twice", flag, text, range, s);
    used[s] = 1;
    pairs.emplace_back(s, t);
  }
  if (pairs.empty()) throw Error("{} is empty", flag);
  return pairs;
}

}  // namespace

std::vector<std::pair<int, int>> parse_layer_map(const std::string& text, int Ls, int Lt) {
  if (text.empty() || text == "uniform") {
    std::vector<std::pair<int, int>> pairs;
    for (int i = 1; i <= Ls; i++)
      pairs.emplace_back(i, int(std::lround(double(i) * Lt / Ls)));
    return pairs;
  }
  return parse_pairs(text, Ls, Lt, "--layer-map",
                     "boundaries (0 = embeddings, L = last layer's output)");
}

std::vector<std::pair<int, int>> parse_attention_layers(const std::string& text, int Ls,
                                                        int Lt) {
  if (text.empty() || text == "last") return {{Ls - 1, Lt - 1}};
  return parse_pairs(text, Ls - 1, Lt - 1, "--attention-layers", "layers");
}

double hidden_state_loss(HiddenLossKind kind, const float* hs, const float* W, const float* ht,
                         const float* weights, int N, int Cs, int Ct, double normalizer,
                         double scale, float* dhs, float* dW) {
  DISTILL_CHECK(W != nullptr || Cs == Ct);
  if (!(normalizer > 0.0)) return 0.0;
  // u = W hs, (N,Ct); du = d(loss)/du.
  std::vector<float> proj, du;
  const float* u = hs;
  if (W) {
    proj.resize(size_t(N) * Ct);
    matmul_forward(proj.data(), hs, W, nullptr, N, Cs, Ct);
    u = proj.data();
  }
  const bool grads = dhs || dW;
  if (grads) du.assign(size_t(N) * Ct, 0.0f);
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int n = 0; n < N; n++) {
    const double w = weights ? weights[n] : 1.0;
    if (w == 0.0) continue;
    const float* un = u + size_t(n) * Ct;
    const float* tn = ht + size_t(n) * Ct;
    const double c = w * scale / normalizer;
    if (kind == HiddenLossKind::MSE) {
      double sum = 0.0;
      for (int j = 0; j < Ct; j++) {
        const double d = double(un[j]) - tn[j];
        sum += d * d;
      }
      total += c * sum / Ct;
      if (grads)
        for (int j = 0; j < Ct; j++) du[size_t(n) * Ct + j] = float(c * 2.0 * (double(un[j]) - tn[j]) / Ct);
    } else {
      double uu = 0.0, tt = 0.0, ut = 0.0;
      for (int j = 0; j < Ct; j++) {
        uu += double(un[j]) * un[j];
        tt += double(tn[j]) * tn[j];
        ut += double(un[j]) * tn[j];
      }
      // Guard zero vectors (padding): the loss is 1 and the gradient 0 there.
      const double nu = std::sqrt(uu) + 1e-12, nt = std::sqrt(tt) + 1e-12;
      const double cos = ut / (nu * nt);
      total += c * (1.0 - cos);
      // d(1 - cos)/du = -(t / (|u||t|) - cos * u / |u|^2)
      if (grads)
        for (int j = 0; j < Ct; j++)
          du[size_t(n) * Ct + j] = float(-c * (tn[j] / (nu * nt) - cos * un[j] / (nu * nu)));
    }
  }
  if (grads) {
    if (W) {
      matmul_backward(dhs, dW, nullptr, du.data(), hs, W, N, Cs, Ct);
    } else if (dhs) {
      for (size_t i = 0; i < size_t(N) * Ct; i++) dhs[i] += du[i];
    }
  }
  return total;
}

double attention_map_loss(const float* att_s, int NHs, const float* att_t, int NHt,
                          const float* weights, int B, int T, double normalizer, double scale,
                          float* datt_s) {
  if (!(normalizer > 0.0)) return 0.0;
  const size_t square = size_t(T) * T;
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
  std::vector<double> ms, mt;  // head-averaged rows, one pair per thread
#pragma omp for schedule(static)
  for (int bi = 0; bi < B * T; bi++) {
    const int b = bi / T, i = bi % T;
    const double w = weights ? weights[bi] : 1.0;
    if (w == 0.0) continue;
    ms.assign(size_t(i) + 1, 0.0);
    mt.assign(size_t(i) + 1, 0.0);
    for (int h = 0; h < NHs; h++) {
      const float* row = att_s + (size_t(b) * NHs + h) * square + size_t(i) * T;
      for (int j = 0; j <= i; j++) ms[j] += row[j];
    }
    for (int h = 0; h < NHt; h++) {
      const float* row = att_t + (size_t(b) * NHt + h) * square + size_t(i) * T;
      for (int j = 0; j <= i; j++) mt[j] += row[j];
    }
    const double c = w * scale / normalizer;
    double kl = 0.0;
    for (int j = 0; j <= i; j++) {
      ms[j] = std::max(ms[j] / NHs, 1e-30);
      mt[j] /= NHt;
      if (mt[j] > 0.0) kl += mt[j] * (std::log(mt[j]) - std::log(ms[j]));
    }
    total += c * kl;
    if (!datt_s) continue;
    // d KL / d A_s,h[j] = -(1/NHs) * mt[j] / ms[j]
    for (int h = 0; h < NHs; h++) {
      float* drow = datt_s + (size_t(b) * NHs + h) * square + size_t(i) * T;
      for (int j = 0; j <= i; j++) drow[j] += float(-c * mt[j] / (ms[j] * NHs));
    }
  }
  }
  return total;
}

}  // namespace distill
