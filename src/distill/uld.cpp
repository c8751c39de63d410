#include "distill/uld.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace distill {

CrossTokenizerLossSpec CrossTokenizerLossSpec::parse(const std::string& text, float temperature) {
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    throw Error("--temperature {}: expected a finite value > 0", temperature);
  CrossTokenizerLossSpec spec;
  spec.temperature = temperature;
  std::stringstream ss(text);
  std::string item;
  bool any = false;
  while (std::getline(ss, item, ',')) {
    const size_t eq = item.find('=');
    const std::string name = item.substr(0, eq);
    const std::string base = name.substr(0, name.find(':'));
    double weight = 1.0;
    if (eq != std::string::npos) {
      const std::string w = item.substr(eq + 1);
      try {
        size_t used = 0;
        weight = std::stod(w, &used);
        if (used != w.size()) weight = NAN;
      } catch (const std::exception&) {
        weight = NAN;
      }
      if (!std::isfinite(weight) || weight < 0.0)
        throw Error("--loss '{}': term '{}' has weight '{}', expected a number >= 0", text, item,
                    w);
    }
    double* slot = base == "uld" ? &spec.uld : base == "xkl" ? &spec.xkl
                   : base == "ce" ? &spec.ce : nullptr;
    if (base == "kl" || base == "rkl" || base == "jsd" || base == "tvd" || base == "skl" ||
        base == "srkl")
      throw Error("--loss '{}': term '{}' compares the teacher's and the student's distributions "
                  "token by token, but their tokenizers differ; use uld and/or xkl (with ce), "
                  "e.g. --loss uld=1,ce=1", text, base);
    if (!slot || name != base)
      throw Error("--loss '{}': unknown term '{}' for cross-tokenizer distillation (expected "
                  "uld, xkl or ce)", text, name);
    *slot += weight;
    any = any || weight > 0.0;
  }
  if (!any) throw Error("--loss '{}': no term with a weight > 0", text);
  return spec;
}

std::string CrossTokenizerLossSpec::describe() const {
  std::string s;
  for (const auto& [name, w] : {std::pair{"uld", uld}, {"xkl", xkl}, {"ce", ce}})
    if (w > 0.0) s += fmt::format("{}{}={}", s.empty() ? "" : ",", name, w);
  return s + fmt::format(" T={}", temperature);
}

VocabularyMatch VocabularyMatch::exact(const std::vector<std::string>& student_tokens,
                                       const std::vector<std::string>& teacher_tokens) {
  VocabularyMatch m;
  m.student_vocab = int(student_tokens.size());
  m.teacher_vocab = int(teacher_tokens.size());
  m.teacher_of_student.assign(student_tokens.size(), -1);
  m.teacher_matched.assign(teacher_tokens.size(), 0);
  std::unordered_map<std::string, int32_t> teacher_id;
  for (size_t i = 0; i < teacher_tokens.size(); i++)
    if (!teacher_tokens[i].empty()) teacher_id.emplace(teacher_tokens[i], int32_t(i));
  for (size_t s = 0; s < student_tokens.size(); s++) {
    if (student_tokens[s].empty()) continue;
    auto it = teacher_id.find(student_tokens[s]);
    if (it == teacher_id.end() || m.teacher_matched[it->second]) continue;
    m.teacher_matched[it->second] = 1;
    m.teacher_of_student[s] = it->second;
    m.student_ids.push_back(int32_t(s));
    m.teacher_ids.push_back(it->second);
  }
  return m;
}

namespace {

// x / T for n entries into out (double); returns log-sum-exp of x / T.
double scaled_logits(const float* x, int n, double T, double* out) {
  double mx = -INFINITY;
  for (int i = 0; i < n; i++) mx = std::max(mx, out[i] = double(x[i]) / T);
  double sum = 0.0;
  for (int i = 0; i < n; i++) sum += std::exp(out[i] - mx);
  return mx + std::log(sum);
}

// Per-thread buffers of one row.
struct RowScratch {
  std::vector<double> zs, zt, q, p, g;
  std::vector<int32_t> order;
};

double uld_row(const float* zs_in, int Vs, const float* zt_in, int Vt, double T, double scale,
               float* dz, RowScratch& s) {
  s.zs.resize(Vs), s.zt.resize(Vt), s.q.resize(Vs), s.p.resize(Vt), s.g.resize(Vs);
  s.order.resize(Vs);
  const double lse_s = scaled_logits(zs_in, Vs, T, s.zs.data());
  const double lse_t = scaled_logits(zt_in, Vt, T, s.zt.data());
  for (int k = 0; k < Vs; k++) s.q[k] = std::exp(s.zs[k] - lse_s);
  for (int k = 0; k < Vt; k++) s.p[k] = std::exp(s.zt[k] - lse_t);
  std::sort(s.p.begin(), s.p.end(), std::greater<double>());
  std::iota(s.order.begin(), s.order.end(), 0);
  // Ties keep the lower id first, so the order (and a tie's subgradient) is deterministic.
  std::sort(s.order.begin(), s.order.end(), [&](int32_t a, int32_t b) {
    return s.q[a] != s.q[b] ? s.q[a] > s.q[b] : a < b;
  });
  double loss = 0.0;
  for (int r = 0; r < std::max(Vs, Vt); r++) {
    const double a = r < Vs ? s.q[s.order[r]] : 0.0, b = r < Vt ? s.p[r] : 0.0;
    loss += std::fabs(a - b);
    if (r < Vs) s.g[s.order[r]] = a > b ? 1.0 : (a < b ? -1.0 : 0.0);
  }
  if (dz) {
    // d/dz_k of T^2 L(softmax(z/T)) = T q_k (g_k - sum_j q_j g_j), g = dL/dq.
    double qg = 0.0;
    for (int k = 0; k < Vs; k++) qg += s.q[k] * s.g[k];
    for (int k = 0; k < Vs; k++) dz[k] += float(scale * T * s.q[k] * (s.g[k] - qg));
  }
  return scale * T * T * loss;
}

double log_sum_exp_where(const double* x, int n, const uint8_t* keep, uint8_t want) {
  double mx = -INFINITY;
  for (int i = 0; i < n; i++)
    if ((keep ? keep[i] : 1) == want) mx = std::max(mx, x[i]);
  if (mx == -INFINITY) return -INFINITY;
  double sum = 0.0;
  for (int i = 0; i < n; i++)
    if ((keep ? keep[i] : 1) == want) sum += std::exp(x[i] - mx);
  return mx + std::log(sum);
}

double xkl_row(const float* zs_in, const float* zt_in, const VocabularyMatch& m,
               const std::vector<uint8_t>& student_matched, double T, double scale, float* dz,
               RowScratch& s) {
  const int Vs = m.student_vocab, Vt = m.teacher_vocab;
  s.zs.resize(Vs), s.zt.resize(Vt);
  const double lse_s = scaled_logits(zs_in, Vs, T, s.zs.data());
  const double lse_t = scaled_logits(zt_in, Vt, T, s.zt.data());
  const bool bucket = m.size() < size_t(Vs);
  // log p' of the matched tokens is log p_t + shift: 0 with a bucket, minus the log of the
  // matched mass without one (renormalized).
  double shift = 0.0, log_pb = -INFINITY, log_qb = -INFINITY;
  if (bucket) {
    log_pb = log_sum_exp_where(s.zt.data(), Vt, m.teacher_matched.data(), 0) - lse_t;
    log_qb = log_sum_exp_where(s.zs.data(), Vs, student_matched.data(), 0) - lse_s;
  } else {
    shift = -(log_sum_exp_where(s.zt.data(), Vt, m.teacher_matched.data(), 1) - lse_t);
  }
  double loss = 0.0;
  for (size_t c = 0; c < m.size(); c++) {
    const int32_t k = m.student_ids[c];
    const double log_p = s.zt[m.teacher_ids[c]] - lse_t + shift, log_q = s.zs[k] - lse_s;
    const double p = std::exp(log_p);
    if (p > 0.0) loss += p * (log_p - log_q);
    if (dz) dz[k] += float(scale * T * (std::exp(log_q) - p));
  }
  if (bucket && log_pb > -INFINITY) loss += std::exp(log_pb) * (log_pb - log_qb);
  if (dz && bucket) {
    // The bucket's teacher mass is spread over its student tokens in proportion to q:
    // d/dz_k = T (q_k - p'_B q_k / q'_B).
    for (int k = 0; k < Vs; k++) {
      if (student_matched[k]) continue;
      const double log_q = s.zs[k] - lse_s;
      dz[k] += float(scale * T * (std::exp(log_q) - std::exp(log_pb + log_q - log_qb)));
    }
  }
  return scale * T * T * loss;
}

}  // namespace

double uld_loss(const float* student_logits, int Vs, const float* teacher_logits, int Vt,
                const std::vector<AlignedRow>& rows, float temperature, double scale,
                float* dlogits) {
  double total = 0.0;
  const int n = int(rows.size());
#pragma omp parallel reduction(+ : total) if (size_t(n) * size_t(Vs + Vt) > 65536)
  {
    RowScratch s;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      const AlignedRow r = rows[i];
      total += uld_row(student_logits + size_t(r.student) * Vs, Vs,
                       teacher_logits + size_t(r.teacher) * Vt, Vt, temperature, scale,
                       dlogits ? dlogits + size_t(r.student) * Vs : nullptr, s);
    }
  }
  return total;
}

double exact_match_kl_loss(const float* student_logits, const float* teacher_logits,
                           const VocabularyMatch& match, const std::vector<AlignedRow>& rows,
                           float temperature, double scale, float* dlogits) {
  const int Vs = match.student_vocab, Vt = match.teacher_vocab;
  std::vector<uint8_t> student_matched(Vs, 0);
  for (int32_t k : match.student_ids) student_matched[k] = 1;
  double total = 0.0;
  const int n = int(rows.size());
#pragma omp parallel reduction(+ : total) if (size_t(n) * size_t(Vs + Vt) > 65536)
  {
    RowScratch s;
#pragma omp for schedule(static)
    for (int i = 0; i < n; i++) {
      const AlignedRow r = rows[i];
      total += xkl_row(student_logits + size_t(r.student) * Vs,
                       teacher_logits + size_t(r.teacher) * Vt, match, student_matched,
                       temperature, scale, dlogits ? dlogits + size_t(r.student) * Vs : nullptr,
                       s);
    }
  }
  return total;
}

}  // namespace distill
