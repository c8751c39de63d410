// Reference causal attention with grouped-query heads: one query row at a time, an explicit
// softmax over the keys s <= t, in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ref/ref.h"

namespace distill::ref {

// q (B,NH,T,HD), k, v (B,NKV,T,HD); query head h reads kv head h / (NH/NKV).
// att (B,NH,T,T): softmax(q k^T / sqrt(HD)) with 0 above the diagonal; out (B,NH,T,HD).
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v,
                       int B, int T, int NH, int NKV, int HD, MatmulPrecision) {
  const double scale = 1.0 / std::sqrt(double(HD));
  const int group = NH / NKV;
  std::vector<double> p(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int hk = h / group;
      const float* qh = q + (long(b) * NH + h) * T * HD;
      const float* kh = k + (long(b) * NKV + hk) * T * HD;
      const float* vh = v + (long(b) * NKV + hk) * T * HD;
      for (int t = 0; t < T; ++t) {
        double mx = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          double dot = 0.0;
          for (int d = 0; d < HD; ++d) dot += double(qh[long(t) * HD + d]) * kh[long(s) * HD + d];
          p[s] = dot * scale;
          mx = std::max(mx, p[s]);
        }
        double sum = 0.0;
        for (int s = 0; s <= t; ++s) sum += (p[s] = std::exp(p[s] - mx));
        float* arow = att + ((long(b) * NH + h) * T + t) * T;
        for (int s = 0; s < T; ++s) arow[s] = s <= t ? float(p[s] / sum) : 0.0f;
        for (int d = 0; d < HD; ++d) {
          double o = 0.0;
          for (int s = 0; s <= t; ++s) o += p[s] / sum * vh[long(s) * HD + d];
          out[((long(b) * NH + h) * T + t) * HD + d] = float(o);
        }
      }
    }
}

// With P = att, dP = dout V^T, dS = P * (dP - rowsum(P * dP)) (softmax backward):
// dq += scale dS K, dk += scale dS^T Q, dv += P^T dout; kv gradients sum over the query heads
// of their group. datt receives dP.
void attention_backward(float* dq, float* dk, float* dv, float* datt, const float* dout,
                        const float* att, const float* q, const float* k, const float* v, int B,
                        int T, int NH, int NKV, int HD, MatmulPrecision) {
  const double scale = 1.0 / std::sqrt(double(HD));
  const int group = NH / NKV;
  // dk, dv sum over t and over the heads of a group: accumulate in double, add once at the end.
  std::vector<double> gk(size_t(B) * NKV * T * HD, 0.0), gv(gk.size(), 0.0);
  std::vector<double> dp(T), ds(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int hk = h / group;
      const long qo = (long(b) * NH + h) * T * HD, ko = (long(b) * NKV + hk) * T * HD;
      for (int t = 0; t < T; ++t) {
        const float* arow = att + ((long(b) * NH + h) * T + t) * T;
        float* drow = datt + ((long(b) * NH + h) * T + t) * T;
        const float* go = dout + qo + long(t) * HD;
        double dot = 0.0;
        for (int s = 0; s <= t; ++s) {
          dp[s] = 0.0;
          for (int d = 0; d < HD; ++d) dp[s] += double(go[d]) * v[ko + long(s) * HD + d];
          dot += arow[s] * dp[s];
        }
        for (int s = 0; s < T; ++s) drow[s] = s <= t ? float(dp[s]) : 0.0f;
        for (int s = 0; s <= t; ++s) ds[s] = arow[s] * (dp[s] - dot);
        for (int d = 0; d < HD; ++d) {
          double g = 0.0;
          for (int s = 0; s <= t; ++s) {
            g += ds[s] * k[ko + long(s) * HD + d];
            gk[ko + long(s) * HD + d] += scale * ds[s] * q[qo + long(t) * HD + d];
            gv[ko + long(s) * HD + d] += double(arow[s]) * go[d];
          }
          if (dq) dq[qo + long(t) * HD + d] += float(scale * g);
        }
      }
    }
  for (size_t i = 0; i < gk.size(); ++i) {
    if (dk) dk[i] += float(gk[i]);
    if (dv) dv[i] += float(gv[i]);
  }
}

}  // namespace distill::ref
