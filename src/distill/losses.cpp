#include "distill/losses.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace distill {
namespace {

// Floor for log p of categories the teacher gives no mass (a zero tail): reverse divergences
// would otherwise be infinite. exp(-30) ~ 1e-13.
constexpr double kLogFloor = -30.0;

double safe_log(double x) { return x > 0.0 ? std::max(std::log(x), kLogFloor) : kLogFloor; }

// Softmax of x/T over n entries into out (double), returning log-sum-exp of x/T.
double softmax_t(const float* x, int n, double T, double* out) {
  double mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = std::max(mx, double(x[i]) / T);
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += out[i] = std::exp(double(x[i]) / T - mx);
  for (int i = 0; i < n; i++) out[i] /= sum;
  return mx + std::log(sum);
}

// Loss over category distributions P (teacher), Q (student) of one term, and adds
// weight * Q_c * dL/dQ_c to qg (the form the backward pass needs, free of 0 * inf).
double term_loss(const KdTerm& t, const double* P, const double* Q, int C, double weight,
                 double* qg) {
  double loss = 0.0;
  const double a = t.param;
  for (int c = 0; c < C; c++) {
    const double p = P[c], q = Q[c];
    double l = 0.0, g = 0.0;  // g = Q * dL/dQ
    switch (t.kind) {
      case KdLossKind::KL:
        if (p > 0.0) l = p * (std::log(p) - safe_log(q));
        g = -p;
        break;
      case KdLossKind::RKL:
        if (q > 0.0) {
          l = q * (std::log(q) - safe_log(p));
          g = q * (std::log(q) - safe_log(p) + 1.0);
        }
        break;
      case KdLossKind::JSD: {
        const double m = a * p + (1.0 - a) * q;
        if (p > 0.0) l += a * p * std::log(p / m);
        if (q > 0.0) {
          l += (1.0 - a) * q * std::log(q / m);
          g = (1.0 - a) * q * std::log(q / m);
        }
        break;
      }
      case KdLossKind::TVD:
        l = 0.5 * std::fabs(p - q);
        g = q * 0.5 * (q > p ? 1.0 : (q < p ? -1.0 : 0.0));
        break;
      case KdLossKind::SKL: {
        const double m = a * p + (1.0 - a) * q;
        if (p > 0.0) {
          l = p * std::log(p / m);
          g = -(1.0 - a) * p * q / m;
        }
        break;
      }
      case KdLossKind::SRKL: {
        const double m = a * q + (1.0 - a) * p;
        if (q > 0.0) {
          l = q * std::log(q / m);
          g = q * (std::log(q / m) + 1.0 - a * q / m);
        }
        break;
      }
      case KdLossKind::CE:
        break;
    }
    loss += l;
    if (qg) qg[c] += weight * g;
  }
  return loss;
}

struct RowScratch {
  std::vector<double> q, P, Q, qg, q1;
  std::vector<int32_t> category;  // token -> category (sparse bucket rule), -1 = tail
};

// The shared part of dense and sparse rows once P and Q are over C categories.
// Returns this row's weighted loss; fills per_term.
double kd_terms(const KdLossSpec& spec, RowScratch& s, int C, double row_scale,
                double* per_term, bool want_grad) {
  const double T = spec.temperature;
  std::fill(s.qg.begin(), s.qg.begin() + C, 0.0);
  double total = 0.0;
  for (const KdTerm& t : spec.terms) {
    if (t.kind == KdLossKind::CE) continue;
    const double w = t.weight * T * T;
    const double l = term_loss(t, s.P.data(), s.Q.data(), C, w * row_scale,
                               want_grad ? s.qg.data() : nullptr);
    per_term[int(t.kind)] += w * l * row_scale;
    total += w * l * row_scale;
  }
  return total;
}

double ce_term(const KdLossSpec& spec, const float* z, int V, int32_t target, double row_scale,
               RowScratch& s, double* per_term, float* dz) {
  double w = 0.0;
  for (const KdTerm& t : spec.terms)
    if (t.kind == KdLossKind::CE) w += t.weight;
  if (w == 0.0 || target < 0) return 0.0;
  if (target >= V) throw Error("target token id {} is outside the vocabulary [0, {})", target, V);
  const double lse = softmax_t(z, V, 1.0, s.q1.data());
  const double l = w * (lse - double(z[target])) * row_scale;
  per_term[int(KdLossKind::CE)] += l;
  if (dz) {
    for (int i = 0; i < V; i++) dz[i] += float(w * row_scale * s.q1[i]);
    dz[target] -= float(w * row_scale);
  }
  return l;
}

template <typename RowFn>
KdLossResult for_rows(const KdLossSpec& spec, int N, int V, const float* weights,
                      double normalizer, RowFn&& row) {
  KdLossResult result;
  if (!(normalizer > 0.0)) return result;  // no target tokens in the step: nothing to learn
  for (int n = 0; n < N; n++) result.positions += weights[n] > 0.0f;
  const int nthreads = 1;  // rows are independent; threading comes with the online trainer
  (void)nthreads;
  RowScratch s;
  s.q.resize(V);
  s.q1.resize(V);
  s.category.resize(V);
  for (int n = 0; n < N; n++) {
    if (!(weights[n] > 0.0f)) continue;
    result.loss += row(n, weights[n] / normalizer, s, result.per_term);
  }
  return result;
}

}  // namespace

const char* kd_loss_name(KdLossKind kind) {
  switch (kind) {
    case KdLossKind::CE: return "ce";
    case KdLossKind::KL: return "kl";
    case KdLossKind::RKL: return "rkl";
    case KdLossKind::JSD: return "jsd";
    case KdLossKind::TVD: return "tvd";
    case KdLossKind::SKL: return "skl";
    case KdLossKind::SRKL: return "srkl";
  }
  return "?";
}

KdLossSpec KdLossSpec::parse(const std::string& text, float temperature, TailRule tail) {
  if (!(temperature > 0.0f)) throw Error("--temperature must be positive, found {}", temperature);
  KdLossSpec spec;
  spec.terms.clear();
  spec.temperature = temperature;
  spec.tail = tail;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos
                                                                          : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) throw Error("--loss '{}': empty term", text);
    std::string name = item, param_s, weight_s;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      weight_s = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (const size_t colon = name.find(':'); colon != std::string::npos) {
      param_s = name.substr(colon + 1);
      name = name.substr(0, colon);
    }
    KdTerm t;
    bool found = false;
    for (KdLossKind k : {KdLossKind::CE, KdLossKind::KL, KdLossKind::RKL, KdLossKind::JSD,
                         KdLossKind::TVD, KdLossKind::SKL, KdLossKind::SRKL})
      if (name == kd_loss_name(k)) {
        t.kind = k;
        found = true;
      }
    if (!found)
      throw Error("--loss '{}': unknown loss '{}' (known: ce, kl, rkl, jsd, tvd, skl, srkl)", text,
                  name);
    auto number = [&](const std::string& s, const char* what) {
      try {
        size_t used = 0;
        const float v = std::stof(s, &used);
        if (used != s.size()) throw std::invalid_argument(s);
        return v;
      } catch (const std::exception&) {
        throw Error("--loss '{}': {} of '{}' is not a number: '{}'", text, what, name, s);
      }
    };
    t.param = t.kind == KdLossKind::JSD ? 0.5f : 0.1f;
    if (!param_s.empty()) {
      if (t.kind != KdLossKind::JSD && t.kind != KdLossKind::SKL && t.kind != KdLossKind::SRKL)
        throw Error("--loss '{}': '{}' takes no parameter", text, name);
      t.param = number(param_s, "parameter");
    }
    if ((t.kind == KdLossKind::JSD || t.kind == KdLossKind::SKL || t.kind == KdLossKind::SRKL) &&
        !(t.param > 0.0f && t.param < 1.0f))
      throw Error("--loss '{}': the parameter of '{}' must be in (0, 1), found {}{}", text, name,
                  t.param, t.kind == KdLossKind::JSD ? " (use kl or rkl for the end points)" : "");
    if (!weight_s.empty()) t.weight = number(weight_s, "weight");
    if (!(t.weight >= 0.0f)) throw Error("--loss '{}': weight of '{}' must be >= 0", text, name);
    spec.terms.push_back(t);
  }
  return spec;
}

bool KdLossSpec::needs_teacher() const {
  return std::any_of(terms.begin(), terms.end(),
                     [](const KdTerm& t) { return t.kind != KdLossKind::CE; });
}

std::string KdLossSpec::describe() const {
  std::string s;
  for (const KdTerm& t : terms) {
    if (!s.empty()) s += ",";
    s += kd_loss_name(t.kind);
    if (t.kind == KdLossKind::JSD || t.kind == KdLossKind::SKL || t.kind == KdLossKind::SRKL)
      s += fmt::format(":{:g}", t.param);
    s += fmt::format("={:g}", t.weight);
  }
  return s + fmt::format(" (T={:g}, tail={})", temperature,
                         tail == TailRule::Bucket ? "bucket" : "ignore");
}

KdLossResult kd_loss_dense(const KdLossSpec& spec, const float* student_logits,
                           const float* teacher_logits, const int32_t* targets,
                           const float* weights, int N, int V, double normalizer, float* dlogits) {
  const double T = spec.temperature;
  const bool kd = spec.needs_teacher();
  return for_rows(spec, N, V, weights, normalizer,
                  [&](int n, double row_scale, RowScratch& s, double* per_term) {
    const float* z = student_logits + size_t(n) * V;
    float* dz = dlogits ? dlogits + size_t(n) * V : nullptr;
    double loss = ce_term(spec, z, V, targets ? targets[n] : -1, row_scale, s, per_term, dz);
    if (!kd) return loss;
    s.P.resize(V);
    s.Q.resize(V);
    s.qg.resize(V);
    softmax_t(teacher_logits + size_t(n) * V, V, T, s.P.data());
    softmax_t(z, V, T, s.Q.data());
    loss += kd_terms(spec, s, V, row_scale, per_term, dz != nullptr);
    if (dz) {
      double S = 0.0;
      for (int i = 0; i < V; i++) S += s.qg[i];
      for (int i = 0; i < V; i++) dz[i] += float((s.qg[i] - s.Q[i] * S) / T);
    }
    return loss;
  });
}

KdLossResult kd_loss_sparse(const KdLossSpec& spec, const float* student_logits,
                            const SparseTeacherRow* teacher, const int32_t* targets,
                            const float* weights, int N, int V, double normalizer,
                            float* dlogits) {
  const double T = spec.temperature;
  const bool kd = spec.needs_teacher();
  const bool bucket = spec.tail == TailRule::Bucket;
  return for_rows(spec, N, V, weights, normalizer,
                  [&](int n, double row_scale, RowScratch& s, double* per_term) {
    const float* z = student_logits + size_t(n) * V;
    float* dz = dlogits ? dlogits + size_t(n) * V : nullptr;
    double loss = ce_term(spec, z, V, targets ? targets[n] : -1, row_scale, s, per_term, dz);
    const SparseTeacherRow& row = teacher[n];
    if (!kd || row.k == 0) return loss;
    const int k = row.k;
    for (int c = 0; c < k; c++)
      if (row.ids[c] < 0 || row.ids[c] >= V)
        throw Error("teacher token id {} at position {} is outside the student's vocabulary "
                    "[0, {})", row.ids[c], n, V);
    const bool has_tail = bucket && row.tail_mass > 0.0f;
    const int C = k + (bucket ? 1 : 0);
    s.P.assign(C, 0.0);
    s.Q.assign(C, 0.0);
    s.qg.resize(C);
    // Teacher categories: log-probabilities / T, renormalized (with the tail as one category).
    double mx = -INFINITY;
    for (int c = 0; c < k; c++) mx = std::max(mx, double(row.logprobs[c]) / T);
    const double log_tail = has_tail ? std::log(double(row.tail_mass)) / T : -INFINITY;
    if (has_tail) mx = std::max(mx, log_tail);
    double sum = 0.0;
    for (int c = 0; c < k; c++) sum += s.P[c] = std::exp(double(row.logprobs[c]) / T - mx);
    if (has_tail) sum += s.P[k] = std::exp(log_tail - mx);
    for (int c = 0; c < C; c++) s.P[c] /= sum;
    // Student: full softmax at T, gathered; the tail is everything else.
    softmax_t(z, V, T, s.q.data());
    double in_k = 0.0;
    for (int c = 0; c < k; c++) in_k += s.Q[c] = s.q[row.ids[c]];
    if (bucket) {
      double all = 0.0;
      for (int i = 0; i < V; i++) all += s.q[i];
      s.Q[k] = std::max(all - in_k, 0.0);
    } else {
      for (int c = 0; c < k; c++) s.Q[c] /= in_k;
    }
    loss += kd_terms(spec, s, C, row_scale, per_term, dz != nullptr);
    if (dz) {
      double S = 0.0;
      for (int c = 0; c < C; c++) S += s.qg[c];
      if (bucket) {
        // Tail tokens share the bucket's Q*g in proportion to their probability.
        const double tail_share = s.Q[k] > 0.0 ? s.qg[k] / s.Q[k] : 0.0;
        for (int i = 0; i < V; i++) dz[i] += float(s.q[i] * (tail_share - S) / T);
        for (int c = 0; c < k; c++) {
          const int32_t id = row.ids[c];
          dz[id] += float((s.qg[c] - s.q[id] * tail_share) / T);
        }
      } else {
        for (int c = 0; c < k; c++) dz[row.ids[c]] += float((s.qg[c] - s.Q[c] * S) / T);
      }
    }
    return loss;
  });
}

}  // namespace distill
